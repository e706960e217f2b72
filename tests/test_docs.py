"""The documentation says what the code does: the README's commands are CI's, docs/configuration.md is
config.py's table, and no page links to a file or heading that is not there."""

import re
from pathlib import Path

import pytest

from nsfwoid.config import describe

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "benchmarks" / "README.md",
         ROOT / "mediawiki" / "Nsfwoid" / "README.md", ROOT / "models" / "README.md"]


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci_lines = (ROOT / ".ci" / "run").read_text().strip().splitlines()
    test_command = next(line for line in ci_lines if "pytest" in line)
    assert f"```sh\n{test_command}\n```" in readme
    assert ci_lines[-1] == ".venv/bin/ruff check ."  # lint after the tests


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
