"""The documentation says what the code does: the README's commands are CI's, docs/configuration.md is
config.py's table, each figure is stated once and agrees with the code, and no page links to a file or heading
that is not there."""

import dataclasses
import re
from pathlib import Path

import pytest
import yaml

from nsfwoid.config import ENV_PREFIX, SCORE_DEFAULTS, MiB, Settings
from nsfwoid.http.server import SHUTDOWN_GRACE_SECONDS
from nsfwoid.scoring.sandbox import WORKER_BASELINE_BYTES

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "benchmarks" / "README.md",
         ROOT / "mediawiki" / "Nsfwoid" / "README.md", ROOT / "models" / "README.md"]


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci_lines = (ROOT / ".ci" / "run").read_text().strip().splitlines()
    test_command = next(line for line in ci_lines if "pytest" in line)
    assert f"```sh\n{test_command}\n```" in readme
    assert ci_lines[-1] == ".venv/bin/ruff check ."  # lint after the tests


def describe() -> list[tuple[str, str, str]]:
    """(variable, default, meaning) for every setting, from config.py."""
    rows = []
    for f in dataclasses.fields(Settings):
        default = ",".join(f.default) if isinstance(f.default, tuple) else str(f.default)
        rows.append((ENV_PREFIX + f.name.upper(), default, f.metadata["help"]))
    return rows


def configuration_rows() -> dict[str, str]:
    """docs/configuration.md's table: variable → default cell."""
    text = (ROOT / "docs" / "configuration.md").read_text()
    return {m.group(1): m.group(2).strip() for m in re.finditer(r"^\| `(NSFWOID_\w+)` \| ([^|]*) \|", text, re.M)}


def test_the_configuration_page_lists_every_setting_with_its_default():
    rows = configuration_rows()
    settings = {variable: default for variable, default, _ in describe()}
    assert set(rows) == set(settings)
    for variable, default in settings.items():
        shown = re.match(r"`([^`]*)`", rows[variable])
        if not default:  # no value: the cell says in words what happens
            assert shown is None, variable
            continue
        assert shown, variable
        value = shown.group(1)
        if default in ("True", "False"):
            assert value == default.lower(), variable
        elif re.fullmatch(r"\d+(\.\d+)?", default):
            assert float(value) == float(default), variable
        else:
            assert value == default, variable


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_links_reach_files_and_headings_that_exist(page):
    text = page.read_text()
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target):
            continue
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        assert linked.exists(), f"{page.name}: {target}"
        if anchor and linked.suffix == ".md":
            assert anchor in anchors(linked), f"{page.name}: {target}"


def anchors(page: Path) -> set[str]:
    """GitHub's anchors for the page's headings: lower case, punctuation dropped, spaces as dashes."""
    found = set()
    for heading in re.findall(r"^#+ (.+)$", page.read_text(), re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        found.add(slug)
    return found


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_page_carries_dated_history(page):
    """Instructions say what is, not when it changed: no dates of changes, no issue numbers."""
    text = page.read_text()
    assert not re.search(r"\b20\d\d-\d\d-\d\d\b(?!T)", text), page.name
    assert not re.search(r"\bissue \d+\b|\buntil 20\d\d-|\bfixed after\b|\bthis round\b", text, re.I), page.name


def test_the_configuration_page_lists_the_serve_only_settings_and_the_score_defaults():
    text = (ROOT / "docs" / "configuration.md").read_text()
    listed = re.search(r"settings only a server reads: (.*?)\.\s", text, re.S).group(1)
    serve_only = {ENV_PREFIX + f.name.upper() for f in dataclasses.fields(Settings) if f.metadata.get("serve_only")}
    assert set(re.findall(r"`(NSFWOID_\w+)`", listed)) == serve_only
    rows = configuration_rows()
    for name, value in SCORE_DEFAULTS.items():
        own = re.search(r"\(`nsfwoid score`: `([^`]+)`\)", rows[ENV_PREFIX + name.upper()])
        assert own and float(own.group(1)) == value, name


def test_no_page_but_the_configuration_page_states_a_setting_s_value():
    """Each limit and timeout is stated once: the table. Other pages name the setting, and link."""
    for page in PAGES:
        if page.name == "configuration.md":
            continue
        stated = re.findall(r"`NSFWOID_[A-Z_]+`[^.;,`]{0,12}\((?:default )?\d[^)]*\)", page.read_text())
        assert not stated, (page.name, stated)


def test_the_worker_baseline_is_the_one_the_sandbox_enforces():
    text = (ROOT / "docs" / "operations.md").read_text()
    stated = re.findall(r"(\d+) MiB\s+\(`WORKER_BASELINE_BYTES`", text)
    stated += re.findall(r"decode memory − (\d+) MiB", text)
    assert len(stated) == 2 and {int(n) for n in stated} == {WORKER_BASELINE_BYTES // MiB}


def test_the_drain_timings_are_the_manifest_s_and_fit_its_grace_period():
    text = (ROOT / "docs" / "operations.md").read_text()
    pause, drain, grace = map(int, re.search(
        r"a (\d+) s `preStop` pause plus the (\d+) s drain, inside a (\d+) s termination grace period",
        text).groups())
    manifest = next(d for d in yaml.safe_load_all((ROOT / "deploy" / "kubernetes" / "nsfwoid.yaml").read_text())
                    if d["kind"] == "Deployment")
    pod = manifest["spec"]["template"]["spec"]
    container = pod["containers"][0]
    env = {e["name"]: e.get("value") for e in container.get("env", [])}
    assert grace == pod["terminationGracePeriodSeconds"]
    assert drain == float(env.get("NSFWOID_DRAIN_TIMEOUT", Settings().drain_timeout))
    assert f"sleep {pause}" in " ".join(map(str, container["lifecycle"]["preStop"]["exec"]["command"]))
    assert pause + drain + 2 * SHUTDOWN_GRACE_SECONDS < grace


def test_the_openapi_limit_on_instances_is_the_setting_s_default():
    spec = yaml.safe_load((ROOT / "openapi.yaml").read_text())
    instances = spec["components"]["schemas"]["PredictRequest"]["properties"]["instances"]
    assert instances["maxItems"] == Settings().max_instances
    assert not re.search(r"\(default \d", (ROOT / "openapi.yaml").read_text())
