"""README.md and docs/ stay a map of the repository as it is: every page linked, every file named.

The commands and quoted protos of these pages are run and compared by the tests of what they
describe (test_http_api, test_grpc_clients, test_deploy_static, test_readme_protos); this file
checks the map itself.
"""

# Standard
import pathlib
import re

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
README = REPO_ROOT / "README.md"
DOCS_DIR = REPO_ROOT / "docs"
LIBRARY_MAP = DOCS_DIR / "library.md"
# The README is the teaching path; deeper material belongs in docs/.
MAX_README_LINES = 350
# Directories whose files a page may name by path; such a path must exist.
TRACKED_DIRS = (
    "caikit_computer_vision",
    "example_tools",
    "vision_client",
    "tests",
    "bench",
    "deploy",
    "docs",
    "clients",
)
# Written by the example's commands, never committed (.gitignore).
GENERATED_PREFIXES = ("bench/results/",)
MARKDOWN_LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")
BACKTICKED = re.compile(r"`([^`\s]+)`")


def _pages():
    return [README, *sorted(DOCS_DIR.glob("*.md"))]


def test_readme_is_a_short_teaching_path():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= MAX_README_LINES, f"README.md has {len(lines)} lines"


def test_the_readme_links_every_docs_page_and_every_link_resolves():
    readme_links = set(MARKDOWN_LINK.findall(README.read_text(encoding="utf-8")))
    for page in sorted(DOCS_DIR.glob("*.md")):
        assert f"docs/{page.name}" in readme_links, f"README.md does not link docs/{page.name}"
    for page in _pages():
        for target in MARKDOWN_LINK.findall(page.read_text(encoding="utf-8")):
            if "://" in target:
                continue
            assert (page.parent / target).exists(), f"{page.name} links a missing {target}"


def test_every_repository_path_a_page_names_exists():
    for page in _pages():
        for quoted in BACKTICKED.findall(page.read_text(encoding="utf-8")):
            path = quoted.rstrip(".,:;")
            if (
                path.split("/")[0] not in TRACKED_DIRS
                or path.startswith(GENERATED_PREFIXES)
                or re.search(r"[<>{}*]|\.\.\.", path)
            ):
                continue
            assert (REPO_ROOT / path).exists(), f"{page.name} names {path}, which does not exist"


def test_the_library_map_names_every_file_of_the_library_and_the_tools():
    text = LIBRARY_MAP.read_text(encoding="utf-8")
    for package in ("caikit_computer_vision", "example_tools"):
        root = REPO_ROOT / package
        for path in sorted(root.rglob("*.py")):
            relative = path.relative_to(root)
            if path.name == "__init__.py" and relative.parent != pathlib.Path("."):
                continue  # a sub-package is named by its directory
            named = (
                f"`{relative.as_posix()}`" in text
                or f"`{relative.parent.as_posix()}/`" in text
                or f"`{path.name}`" in text
            )
            assert named, f"docs/library.md does not name {package}/{relative.as_posix()}"
    for script in sorted(REPO_ROOT.glob("*.py")):
        assert f"`{script.name}`" in text, f"docs/library.md does not name {script.name}"
