"""README.md quotes only what caikit really generates: proto file names and protobuf blocks.

Checked against a fresh dump of the library (the session's run of dump_protos.py). Set
README_UNDER_TEST to a file path to check a draft instead of README.md.
"""

# Standard
from typing import Dict, List
import os
import pathlib
import re

# Third Party
import pytest

# Local
from .proto_fixtures import REPO_ROOT, DumpRun, dump_protos_once

README_UNDER_TEST_ENV = "README_UNDER_TEST"

# A proto file name, with its directories if written (protos/ccv.x.proto): it starts with a letter
# and is not glued to a glob or a placeholder, so `protos/*.proto`, `{...}trainrequest.proto` and
# `...trainparameters.proto` are patterns, not names.
PROTO_FILE_NAME = re.compile(r"(?<![\w.*{}/])[A-Za-z_][\w./]*\.proto\b")
# Imports of protobuf's well-known types, which protoc brings along: never in a dump.
WELL_KNOWN_TYPES_DIR = "google/protobuf/"
PROTOBUF_BLOCK = re.compile(r"^```protobuf[ \t]*\n(.*?)^```", re.M | re.S)
# A line of a quoted block that stands for omitted lines.
ELISION = "..."


@pytest.fixture(scope="session")
def dump(tmp_path_factory) -> DumpRun:
    return dump_protos_once(tmp_path_factory)


@pytest.fixture(scope="module")
def readme_path() -> pathlib.Path:
    return pathlib.Path(os.environ.get(README_UNDER_TEST_ENV) or REPO_ROOT / "README.md")


@pytest.fixture(scope="module")
def readme_text(readme_path) -> str:
    return readme_path.read_text(encoding="utf-8")


def proto_file_names(text: str) -> set:
    """Every proto file mentioned in ``text``, as written (with its directories, if any)."""
    return set(PROTO_FILE_NAME.findall(text))


def protobuf_blocks(text: str) -> List[str]:
    """The bodies of the ```protobuf fenced blocks in ``text``."""
    return PROTOBUF_BLOCK.findall(text)


def normalised_lines(text: str) -> List[str]:
    """Lines with whitespace runs collapsed; blank lines and ``...`` elision lines dropped."""
    lines = (" ".join(line.split()) for line in text.splitlines())
    return [line for line in lines if line and line != ELISION]


def is_quoted_from(block: str, files: Dict[str, List[str]]) -> bool:
    """Whether the block's lines appear, in order and contiguous, in one of ``files``.

    ``...`` lines are dropped before comparing, so they may only shorten a quote at its ends.
    """
    quoted = normalised_lines(block)
    return bool(quoted) and any(
        lines[start : start + len(quoted)] == quoted
        for lines in files.values()
        for start in range(len(lines) - len(quoted) + 1)
    )


@pytest.fixture(scope="module")
def dumped_protos(dump) -> Dict[str, List[str]]:
    return {
        path.name: normalised_lines(path.read_text(encoding="utf-8"))
        for path in dump.protos_dir.glob("*.proto")
    }


def test_readme_has_protobuf_blocks(readme_path, readme_text):
    # Deliberate guard: without ```protobuf blocks the quote check below passes vacuously.
    # It fails until README.md gets its "A deeper look" section with the real protos.
    assert protobuf_blocks(readme_text), (
        f"{readme_path.name} has no ```protobuf blocks: add the 'A deeper look' section "
        "quoting the dumped protos (this guard keeps the quote check from passing with "
        "nothing to check)"
    )


def test_every_proto_file_named_is_dumped(readme_text, dump):
    dumped = {path.name for path in dump.protos_dir.iterdir()}
    not_dumped = [
        name
        for name in proto_file_names(readme_text)
        if pathlib.PurePosixPath(name).name not in dumped
        and not name.startswith(WELL_KNOWN_TYPES_DIR)
    ]
    assert sorted(not_dumped) == []


def test_every_protobuf_block_is_quoted_from_the_dump(readme_text, dumped_protos):
    not_quoted = [
        block for block in protobuf_blocks(readme_text) if not is_quoted_from(block, dumped_protos)
    ]
    assert not_quoted == [], "blocks that no dumped .proto file contains as written"


def test_name_pattern_skips_globs_and_placeholders():
    text = (
        "protoc ... protos/*.proto; `{package}.{task}task{module}trainrequest.proto`, "
        "the `...trainparameters.proto` wrapper, protos/ccv.objectdetectiontaskrequest.proto, "
        '`import "google/protobuf/timestamp.proto";`.'
    )
    assert proto_file_names(text) == {
        "protos/ccv.objectdetectiontaskrequest.proto",
        "google/protobuf/timestamp.proto",
    }


def test_block_check_rejects_a_changed_field_number(dumped_protos):
    quoted = "...\nmessage ObjectDetectionTaskRequest {\n\n  /*-- fields --*/\n  bytes inputs = 1;"
    assert is_quoted_from(quoted, dumped_protos)
    assert not is_quoted_from(quoted.replace("= 1;", "= 2;"), dumped_protos)
    assert not is_quoted_from("...\n", dumped_protos)
