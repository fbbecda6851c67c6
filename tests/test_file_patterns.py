"""outputFiles' filePattern as Azure documents it for Linux nodes (file_patterns.py), on a
real directory tree: `**`, `*`, `?`, brackets and negated brackets, escapes, names starting
with a dot, patterns that reach the task directory or leave the node's Batch directories."""

from __future__ import annotations

import pytest

from batchyard.runtime.machine_files import LocalFiles
from batchyard.services.batch import file_patterns as fp

ROOT = "/mnt/batch/tasks"
WD = f"{ROOT}/workitems/j/job-1/t/wd"
FILES = ["a.txt", "b.gif", ".a.gif", "abc*", "abcdef", "x1.log", "x2.log", "xa.log", "d/e.txt", "d/f/g.txt",
         "d/.hidden/h.txt", ".dot/i.txt"]


@pytest.fixture
def tree(tmp_path):
    for name in FILES:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(name)
    return tmp_path


def matched(tree, pattern: str) -> list[str]:
    selection = fp.select(pattern, WD, ROOT, {})
    assert selection is not None and selection.base == WD
    return fp.walk(LocalFiles(tree), "", selection.regex)


@pytest.mark.parametrize("pattern, expected", [
    ("*.gif", ["b.gif"]),                      # a leading dot is not matched by a wildcard
    (".*.gif", [".a.gif"]),                    # ... unless the pattern asks for it
    ("abc*", ["abc*", "abcdef"]),
    ("abc[*]", ["abc*"]),                      # a wildcard escaped in brackets
    ("x?.log", ["x1.log", "x2.log", "xa.log"]),
    ("x[0-9].log", ["x1.log", "x2.log"]),
    ("x[!0-9].log", ["xa.log"]),
    ("**/*.txt", ["a.txt", "d/e.txt", "d/f/g.txt"]),  # any depth, hidden directories left out
    ("d/**/*.txt", ["d/e.txt", "d/f/g.txt"]),
    ("d/*/*.txt", ["d/f/g.txt"]),
])
def test_wildcards_match_as_azure_documents(tree, pattern, expected):
    if pattern.startswith("d/"):
        selection = fp.select(pattern, WD, ROOT, {})
        assert selection.base == f"{WD}/d"
        assert fp.walk(LocalFiles(tree), "d", selection.regex) == [e.removeprefix("d/") for e in expected]
    else:
        assert matched(tree, pattern) == expected


def test_blob_names_keep_the_structure_below_the_literal_directories():
    selection = fp.select("d/**/*.txt", WD, ROOT, {})
    assert fp.blob_name(selection, "f/g.txt", "run/1") == "run/1/f/g.txt"
    assert fp.blob_name(selection, "e.txt", None) == "e.txt"
    single = fp.select("d/e.txt", WD, ROOT, {})
    assert single.regex is None and single.base == f"{WD}/d/e.txt"
    assert fp.blob_name(single, None, "renamed.txt") == "renamed.txt"
    assert fp.blob_name(single, None, None) == "e.txt"


def test_variables_absolute_paths_and_escapes():
    env = {"AZ_BATCH_TASK_DIR": WD.removesuffix("/wd"), "AZ_BATCH_NODE_SHARED_DIR": f"{ROOT}/shared"}
    assert fp.select("$AZ_BATCH_TASK_DIR/std*.txt", WD, ROOT, env).base == WD.removesuffix("/wd")
    assert fp.select("../std*.txt", WD, ROOT, env).base == WD.removesuffix("/wd")
    assert fp.select("${AZ_BATCH_NODE_SHARED_DIR}/out.bin", WD, ROOT, env).base == f"{ROOT}/shared/out.bin"
    assert fp.select("/etc/passwd", WD, ROOT, env) is None          # outside the node's Batch directories
    assert fp.select("../../../../../../../etc/*", WD, ROOT, env) is None
    assert fp.select(f"{ROOT}/../*", WD, ROOT, env) is None
