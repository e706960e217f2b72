"""Throwaway wikis for the end-to-end tests, on both MediaWiki LTS releases that CI proves: Debian 12's 1.39 on
the host, and Debian 13's 1.43 in a chroot (install-mediawiki-1.43.sh) whose PHP php-1.43 runs. Each wiki is on
SQLite and served by `php -S` on loopback; every test runs once on each release.

Two wikis: `wiki`, with AbuseFilter and Nsfwoid, and `commons`, a second loopback wiki that stands in for
Wikimedia Commons as the first one's ForeignAPIRepo. InstantCommons is never turned on.
"""

from __future__ import annotations

import os

# No test process, nor any service or CLI it starts, sends onnxruntime's telemetry (docs/security.md).
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

import contextlib
import copy
import math
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from mediawiki.tests.wiki_helpers import ADMIN, EXTENSION, HIGH, LOW, MEDIAWIKI, PASSWORD, Service
from tests.images import FIDELITY
from tests.processes import HungService, free_port

ROUTER = Path(__file__).with_name("router.php")


@dataclass(frozen=True)
class MediaWiki:
    """One MediaWiki release that the tests run on: the command that runs its PHP, and where its files are."""
    version: str
    php: tuple[str, ...]
    root: Path  # of the file system its PHP runs in
    needs: str  # how to install it

    @property
    def installed(self) -> bool:
        return (self.root / MEDIAWIKI.relative_to("/") / "maintenance" / "install.php").exists()

    @property
    def release(self) -> tuple[int, int]:
        return tuple(int(part) for part in self.version.split("."))


CHROOT_1_43 = Path(os.environ.get("NSFWOID_MEDIAWIKI_1_43", "/var/lib/nsfwoid-tests/mediawiki-1.43"))
RELEASES = [
    MediaWiki("1.39", ("php",), Path("/"), "bash mediawiki/tests/install-debian-packages.sh"),
    MediaWiki("1.43", (str(Path(__file__).with_name("php-1.43")),), CHROOT_1_43,
              "bash mediawiki/tests/install-mediawiki-1.43.sh, as root"),
]


def pytest_collection_modifyitems(config, items):
    """Every test here runs real wikis; on MediaWiki 1.43, PHP runs in a chroot, as root. Each is slow too
    (tests/conftest.py, which is not loaded when these tests run alone)."""
    for item in items:
        if Path(item.fspath).is_relative_to(Path(__file__).parent):
            item.add_marker(pytest.mark.wiki)
            item.add_marker(pytest.mark.slow)
            release = getattr(item, "callspec", None) and item.callspec.params.get("mediawiki")
            if release is not None and release.root != Path("/"):  # a chroot
                item.add_marker(pytest.mark.root)


@pytest.fixture(scope="session", params=RELEASES, ids=[release.version for release in RELEASES])
def mediawiki(request) -> MediaWiki:
    """Each release in turn; one that is not installed fails the test under CI=true and skips it otherwise."""
    release = request.param
    if not release.installed or (release.root != Path("/") and os.geteuid() != 0):
        message = f"MediaWiki {release.version} is not installed in {release.root}, or needs root: {release.needs}"
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true, but {message}")
        pytest.skip(message)
    return release


class Maintenance:
    """MediaWiki's maintenance scripts, and the extension's, for the wiki whose LocalSettings.php is in `root`."""

    def __init__(self, mediawiki: MediaWiki, root: Path, **env: str):
        self.mediawiki = mediawiki
        self.root = root
        self.env = {**os.environ, "MW_CONFIG_FILE": str(root / "LocalSettings.php"), "MW_INSTALL_PATH": str(MEDIAWIKI),
                    **env}

    def php(self, script: str | Path, *args, check: bool = True, cwd: Path = MEDIAWIKI,
            options: tuple[str, ...] = (), stdin: str | None = None) -> subprocess.CompletedProcess:
        """A maintenance script of MediaWiki's (a path under /usr/share/mediawiki) or of the extension."""
        path = script if Path(script).is_absolute() else MEDIAWIKI / script
        result = subprocess.run([*self.mediawiki.php, *options, str(path), *map(str, args)], env=self.env, cwd=cwd,
                                input=stdin,
                                capture_output=True, text=True, timeout=300)
        if check and result.returncode != 0:
            raise AssertionError(f"{script} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
        return result


class Wiki(Maintenance):
    """One installed wiki, its `php -S` server, and a logged-in Action API session."""

    def __init__(self, mediawiki: MediaWiki, root: Path, name: str, service: Service, settings: str = "",
                 extensions: str = ""):
        super().__init__(mediawiki, root, NSFWOID_TEST_UPLOADS=str(root / "images"))
        self.versioned: dict[str, float] = {}  # when each file last got a version, through upload() or revert()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        (root / "data").mkdir(parents=True)
        (root / "images").mkdir()
        self.php("maintenance/install.php", "--confpath", root, "--dbtype", "sqlite", "--dbpath", root / "data",
                 "--dbname", name, "--server", self.url, "--scriptpath", "", "--lang", "en", "--pass", PASSWORD,
                 "--skins", "Vector", *(["--extensions", extensions] if extensions else []), name, ADMIN)
        self.overrides = root / "overrides.php"
        with open(root / "LocalSettings.php", "a") as local_settings:
            local_settings.write(f"""
$wgEnableUploads = true;
$wgUploadDirectory = "{root}/images";
$wgUploadPath = "/images";
$wgFileExtensions[] = "svg";
$wgFileExtensions[] = "pdf";  // with no PdfHandler: a file that can be scored neither as it is nor by a thumbnail
$wgUseInstantCommons = false;
// The web server and the maintenance scripts must share every cache: APCu is on only in php -S.
$wgMainCacheType = CACHE_NONE;
$wgMessageCacheType = CACHE_NONE;
$wgSessionCacheType = CACHE_DB;
// Jobs run only when a test runs runJobs.php.
$wgJobRunRate = 0;
$wgDebugLogGroups["Nsfwoid"] = "{root}/nsfwoid.log";
$wgDebugLogGroups["exception"] = "{root}/exception.log";
$wgShowExceptionDetails = true;
wfLoadExtension( "Nsfwoid", "{EXTENSION}/extension.json" );
$wgNsfwoidServiceUrl = "{service.url}";
{settings}
if ( is_file( "{self.overrides}" ) ) {{
    // php -S keeps compiled files in opcache and checks their timestamps only every 2 s: without this, a request
    // soon after a test changed its settings would run with the settings before.
    if ( function_exists( "opcache_invalidate" ) ) {{
        opcache_invalidate( "{self.overrides}", true );
    }}
    require "{self.overrides}";
}}
""")
        self.php("maintenance/update.php", "--quick")
        self.server = None
        self.start()
        self.session = requests.Session()
        self.login()

    def start_php(self, script: str | Path, *args) -> subprocess.Popen:
        """A maintenance script left running, for a test that reads its output as it goes."""
        path = script if Path(script).is_absolute() else MEDIAWIKI / script
        return subprocess.Popen([*self.mediawiki.php, str(path), *map(str, args)], env=self.env, cwd=MEDIAWIKI,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def start(self):
        command = [*self.mediawiki.php, "-S", f"127.0.0.1:{self.port}", "-t", str(MEDIAWIKI), str(ROUTER)]
        self.server = subprocess.Popen(command, env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with contextlib.suppress(requests.ConnectionError):
                requests.get(self.url + "/api.php", timeout=5)
                return
            time.sleep(0.1)
        raise RuntimeError(f"php -S on {self.url} did not start")

    def stop(self):
        self.server.terminate()
        self.server.wait(10)

    def api(self, method: str = "GET", files=None, **params) -> dict:
        params = {"format": "json", "formatversion": "2", **params}
        if method == "GET":
            response = self.session.get(self.url + "/api.php", params=params, timeout=120)
        else:
            response = self.session.post(self.url + "/api.php", data=params, files=files, timeout=120)
        response.raise_for_status()
        return response.json()

    def token(self, kind: str = "csrf") -> str:
        return self.api(action="query", meta="tokens", type=kind)["query"]["tokens"][f"{kind}token"]

    def login(self, user: str = ADMIN):
        answer = self.api("POST", action="clientlogin", username=user, password=PASSWORD,
                          loginreturnurl=self.url + "/", logintoken=self.token("login"))
        assert answer["clientlogin"]["status"] == "PASS", answer

    def as_user(self, user: str, *groups: str) -> Wiki:
        """The same wiki through a session of its own, logged in as `user`, who is created, or added to `groups`,
        by maintenance/createAndPromote.php."""
        self.php("maintenance/createAndPromote.php", "--force", *(["--custom-groups", ",".join(groups)] if groups
                                                                   else []), user, PASSWORD)
        other = copy.copy(self)
        other.session = requests.Session()
        other.login(user)
        return other

    def upload(self, name: str, data: bytes) -> dict:
        self._in_a_later_second(name)
        answer = self.api("POST", files={"file": (name, data)}, action="upload", filename=name,
                          ignorewarnings="1", token=self.token())
        # The upload's job is pushed after its answer has been sent. php -S serves one request at a time, so the
        # next request is answered only once that is done.
        self.token()
        self.versioned[name] = time.time()
        return answer

    def revert(self, name: str, archivename: str) -> dict:
        """action=filerevert to the archived version `archivename`."""
        self._in_a_later_second(name)
        answer = self.api("POST", action="filerevert", filename=name, archivename=archivename, comment="back",
                          token=self.token())
        self.versioned[name] = time.time()
        return answer

    def _in_a_later_second(self, name: str) -> None:
        """Wait, if need be, for a later second than the file's last version. MediaWiki names an archived version
        by the second, so a new version in that same second would archive the current one under a name that
        exists (backend-fail-alreadyexists: a revert failed one full run in four)."""
        if name in self.versioned:
            time.sleep(max(0.0, math.ceil(self.versioned[name]) + 0.05 - time.time()))

    def edit(self, title: str, text: str) -> dict:
        return self.api("POST", action="edit", title=title, text=text, token=self.token())

    def score_of(self, name: str) -> dict | None:
        """prop=nsfwscore for File:name."""
        page = self.api(action="query", prop="nsfwscore", titles=f"File:{name}")["query"]["pages"][0]
        return page.get("nsfwscore")

    def run_jobs(self) -> str:
        return self.php("maintenance/runJobs.php").stdout

    def form_token(self, title: str) -> str:
        """The edit token of the form that the page `title` shows, as a browser would post it back."""
        form = self.session.get(self.url + "/index.php", params={"title": title}, timeout=60)
        token = re.search(r'name="wpEditToken"[^>]*value="([^"]+)"|value="([^"]+)"[^>]*name="wpEditToken"',
                          form.text)
        return token.group(1) or token.group(2)

    def add_filter(self, description: str, rules: str):
        """A filter that disallows what its rules match, saved through Special:AbuseFilter as a sysop would."""
        saved = self.session.post(self.url + "/index.php", params={"title": "Special:AbuseFilter/new"}, data={
            "wpEditToken": self.form_token("Special:AbuseFilter/new"), "wpFilterDescription": description,
            "wpFilterRules": rules, "wpFilterNotes": "", "wpFilterEnabled": "1", "wpFilterActionDisallow": "1",
            "wpFilterDisallowMessage": "abusefilter-disallowed",
        }, timeout=60)
        assert "changedfilter=" in saved.url, f"AbuseFilter refused the filter {rules!r}"
        return int(re.search(r"changedfilter=(\d+)", saved.url).group(1))

    @contextlib.contextmanager
    def settings(self, php: str):
        """Extra LocalSettings lines for the duration of a block: php -S reads them on each request."""
        self.overrides.write_text("<?php\n" + php + "\n")
        try:
            yield
        finally:
            self.overrides.unlink()


@pytest.fixture(scope="session")
def service():
    service = Service(allowed_host="127.0.0.1")
    yield service
    service.stop()


@pytest.fixture
def hung_service():
    with HungService() as service:
        yield service


@pytest.fixture(scope="session")
def commons(mediawiki, tmp_path_factory, service):
    """Also shows that Nsfwoid works, storing scores, on a wiki without AbuseFilter."""
    commons = Wiki(mediawiki, tmp_path_factory.mktemp("commons"), "commonswiki", service)
    yield commons
    commons.stop()


@pytest.fixture(scope="session")
def wiki(mediawiki, tmp_path_factory, service, commons):
    wiki = Wiki(mediawiki, tmp_path_factory.mktemp("wiki"), "testwiki", service, f"""
$wgForeignFileRepos[] = [
    "class" => ForeignAPIRepo::class,
    "name" => "commonswiki",
    "apibase" => "{commons.url}/api.php",
    "hashLevels" => 2,
    "fetchDescription" => false,
    "apiThumbCacheExpiry" => 0,
];
// The tests trip their filters on most edits: never let AbuseFilter throttle them.
$wgAbuseFilterEmergencyDisableThreshold = [ "default" => 1.0 ];
$wgAbuseFilterEmergencyDisableCount = [ "default" => 1000 ];
""", extensions="AbuseFilter")
    yield wiki
    wiki.stop()


@pytest.fixture
def make_wiki(mediawiki, tmp_path_factory, service):
    """Wikis of a test's own, installed as `wiki` is, and stopped after the test: make_wiki(name, **options)."""
    made = []

    def make(name: str, **options) -> Wiki:
        made.append(Wiki(mediawiki, tmp_path_factory.mktemp(name), name, service, **options))
        return made[-1]
    yield make
    for wiki in made:
        wiki.stop()


DATABASE_SERVERS = {"mysql": ("mariadb", "mysql"), "postgres": ("postgresql", "psql")}


@pytest.fixture
def database_wiki(mediawiki, tmp_path):
    """database_wiki(db_type) starts Debian's MariaDB or PostgreSQL service (mediawiki/tests/install-debian-
    packages.sh installs both), installs a wiki on it with Nsfwoid, runs update.php, and returns its Maintenance.
    No web server: the tests that use it run maintenance scripts."""
    user, password = "nsfwoid_test", "Nsfwoid-test-database-1"

    def install(db_type: str) -> Maintenance:
        database = f"nsfwoid_{db_type}"
        start_server(db_type, database)
        wiki = Maintenance(mediawiki, tmp_path)
        wiki.php("maintenance/install.php", "--confpath", tmp_path, "--dbtype", db_type, "--dbserver", "localhost",
                 "--dbname", database, "--dbuser", user, "--dbpass", password, "--installdbuser", user,
                 "--installdbpass", password, "--server", "http://127.0.0.1:9", "--scriptpath", "", "--lang", "en",
                 "--pass", PASSWORD, database, ADMIN)
        with open(tmp_path / "LocalSettings.php", "a") as settings:
            settings.write(f'\nwfLoadExtension( "Nsfwoid", "{EXTENSION}/extension.json" );\n')
        wiki.php("maintenance/update.php", "--quick")
        return wiki

    def start_server(db_type: str, database: str):
        """The service, a user and password that may create `database`, and no `database` an earlier run left."""
        service, client = DATABASE_SERVERS[db_type]
        if shutil.which(client) is None or os.geteuid() != 0:
            message = f"needs root and {service} (mediawiki/tests/install-debian-packages.sh)"
            if os.environ.get("CI") == "true":
                pytest.fail(f"CI=true, but this test {message}")
            pytest.skip(message)
        subprocess.run(["service", service, "start"], check=True, capture_output=True, timeout=120)
        if db_type == "mysql":
            sql = (f"DROP DATABASE IF EXISTS {database}; CREATE USER IF NOT EXISTS '{user}'@'localhost' "
                   f"IDENTIFIED BY '{password}'; GRANT ALL ON *.* TO '{user}'@'localhost' WITH GRANT OPTION;")
            subprocess.run(["mysql", "-e", sql], check=True, capture_output=True, timeout=60)
        else:
            sql = (f"DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{user}') THEN "
                   f"CREATE ROLE {user} LOGIN SUPERUSER PASSWORD '{password}'; END IF; END $$;")
            for command in ([client, "-c", sql], ["dropdb", "--if-exists", database]):
                subprocess.run(["runuser", "-u", "postgres", "--", *command], check=True, capture_output=True,
                               timeout=60, cwd="/")
    return install


@pytest.fixture(scope="session")
def threshold(service) -> float:
    """Between the two highest-scoring fixtures: HIGH is over it, LOW under it."""
    high, low = (service.score((FIDELITY / name).read_bytes())["score"] for name in (HIGH, LOW))
    assert high > low
    return (high + low) / 2


@pytest.fixture(scope="session")
def filters(wiki, threshold):
    """The two filters of the README, saved through Special:AbuseFilter.

    The upload filter is confined to titles starting with "Guarded", so that other tests can upload high-scoring
    files to add them to pages. The title comes first: AbuseFilter stops at the first false operand of `&`, so
    file_nsfw_score is not computed, and no score is stored, for the other uploads.
    """
    wiki.add_filter("Explicit image added to a page", f'action == "edit" & added_files_nsfw_score > {threshold:.9f}')
    wiki.add_filter("Explicit upload",
                    f'action == "upload" & page_title rlike "^Guarded" & file_nsfw_score > {threshold:.9f}')
