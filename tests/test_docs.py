"""The design lives in docs/ and the code points at it (docs/design.md §2): every section citation in
the tracked code and config names a page and a section that exist, no citation keeps the old bare form
(the word DESIGN, then the section sign), and every repository path the docs name in backquotes exists."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
# Where code and config cite the design (tracked files only).
CITING = ("bench", "analysis", "conf", "tests", "hydra_plugins", "multirun.sh", "pyproject.toml")
TEXT_SUFFIXES = {".py", ".yaml", ".yml", ".md", ".sh", ".toml", ".txt", ".cfg", ".json", ""}

SECTION_ID = r"§(\d+[a-z]?)"
# "docs/design.md §11, §11a", "docs/design.md §3–§4", "docs/design.md §5 and §12": the page, then its ids.
CITATION = re.compile(r"docs/([\w./-]+?\.md)((?:\s*(?:,|;|–|-|and|or|&)?\s*" + SECTION_ID + r")+)")
HEADING = re.compile(r"^#{1,6}\s+" + SECTION_ID + r"\b", re.M)
BARE = re.compile(r"\bDESIGN\s+§")
# The design's numbering is what every citation maps to: it must not drift.
DESIGN_SECTIONS = [str(n) for n in range(1, 12)] + ["11a"] + ["12", "13", "14"]


def citations(text: str) -> list[tuple[str, str]]:
    """Every (page, section id) cited in `text`, e.g. [("design.md", "11"), ("design.md", "11a")]."""
    return [(m.group(1), sid) for m in CITATION.finditer(text) for sid in re.findall(SECTION_ID, m.group(2))]


def sections(page: Path) -> list[str]:
    """The section ids of a docs page: headings that start with "§<id>"."""
    return HEADING.findall(page.read_text(encoding="utf-8"))


def tracked_files() -> list[Path]:
    """The citing files git tracks (every file under the citing roots when this is no git checkout)."""
    try:
        listed = subprocess.run(["git", "ls-files", "-z", "--", *CITING], cwd=ROOT, capture_output=True,
                                check=True).stdout.decode().split("\0")
        paths = [ROOT / p for p in listed if p]
    except (OSError, subprocess.CalledProcessError):
        paths = [p for name in CITING for p in ([ROOT / name] if (ROOT / name).is_file()
                                                else (ROOT / name).rglob("*"))]
    return sorted(p for p in paths if p.is_file() and p.suffix in TEXT_SUFFIXES)


def unresolved(files: list[Path]) -> list[str]:
    """'file:line: docs/page.md §id (why)' for each citation whose page or section does not exist."""
    known: dict[str, set[str] | None] = {}
    problems = []
    for path in files:
        for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            for page, sid in citations(line):
                if page not in known:
                    known[page] = set(sections(DOCS / page)) if (DOCS / page).is_file() else None
                where = f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}:{number}"
                if known[page] is None:
                    problems.append(f"{where}: docs/{page} §{sid} (no such page)")
                elif sid not in known[page]:
                    problems.append(f"{where}: docs/{page} §{sid} (no such section)")
    return problems


# ---------------------------------------------------------------- the parser, on hand-written text
# D spells the docs folder so that these made-up citations are not read as citations of this file.
D = "docs" + "/"


def test_citations_are_read_with_every_id_of_a_list_or_range():
    text = (f"({D}design.md §11, §11a) and {D}design.md §3–§4; see {D}design.md §5 and §12.\n"
            f"Kaplan et al. 2020, §2.1 is no citation; {D}other.md §1 is one.")
    assert citations(text) == [("design.md", "11"), ("design.md", "11a"), ("design.md", "3"),
                               ("design.md", "4"), ("design.md", "5"), ("design.md", "12"), ("other.md", "1")]


def test_unresolved_names_a_missing_section_and_a_missing_page(tmp_path):
    good, bad = tmp_path / "good.py", tmp_path / "bad.py"
    good.write_text(f'"""Rule: {D}design.md §11a."""\n')
    bad.write_text(f"# {D}design.md §99\nx = 1  # {D}nowhere.md §1\n")
    assert unresolved([good]) == []
    assert unresolved([bad]) == [f"{bad}:1: {D}design.md §99 (no such section)",
                                 f"{bad}:2: {D}nowhere.md §1 (no such page)"]


def test_the_bare_form_is_recognised():
    assert BARE.search("(" + "DESIGN" + " §11a)") and not BARE.search(f"({D}design.md §11a)")


def test_headings_give_section_ids():
    assert HEADING.findall("# Title\n## §1 Purpose\ntext §2\n### §11a Protocol\n") == ["1", "11a"]


# ---------------------------------------------------------------- the repository


def test_the_design_keeps_its_numbering():
    assert sections(DOCS / "design.md") == DESIGN_SECTIONS


def test_every_citation_in_the_code_names_a_section_that_exists():
    files = tracked_files()
    assert any(p.name == "pipeline.py" for p in files), "the citing files were not found"
    problems = unresolved(files)
    assert not problems, "citations of sections that do not exist:\n" + "\n".join(problems)


def test_no_citation_uses_the_bare_design_form():
    bare = [f"{p.relative_to(ROOT)}:{n}" for p in tracked_files()
            for n, line in enumerate(p.read_text(encoding="utf-8", errors="replace").splitlines(), 1)
            if BARE.search(line)]
    assert not bare, (f"{len(bare)} citations still use the bare form; write 'docs/design.md §N' instead:\n"
                      + "\n".join(bare[:20]))


# Backquoted repository paths in the docs: `bench/methods/base.py`, `conf/dataset/`. Placeholders
# (`<name>`), globs and runtime folders (runs/, .cache/) are not files of the repository.
DOC_PATH = re.compile(r"`((?:bench|analysis|conf|tests|results|docs|hydra_plugins)/[^`\s]*)`")


@pytest.mark.parametrize("page", sorted(p.name for p in DOCS.glob("*.md")))
def test_every_path_the_docs_name_exists(page):
    text = (DOCS / page).read_text(encoding="utf-8")
    named = {m for m in DOC_PATH.findall(text) if not re.search(r"[<>*{}]", m)}
    missing = sorted(p for p in named if not (ROOT / p.rstrip("/")).exists())
    assert not missing, f"docs/{page} names paths that do not exist: {missing}"


@pytest.mark.parametrize("page", sorted(p.name for p in DOCS.glob("*.md")))
def test_every_relative_link_in_the_docs_resolves(page):
    text = (DOCS / page).read_text(encoding="utf-8")
    links = [t for t in re.findall(r"\]\(([^)\s#]+)", text) if "://" not in t]
    missing = [t for t in links if not (DOCS / t).resolve().exists()]
    assert not missing, f"docs/{page} links to missing files: {missing}"
