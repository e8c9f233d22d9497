"""The project documents itself: nothing a user reads points outside the repository."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUTSIDE = re.compile(r"\b(SPEC|STACK|STYLE)\.md\b|\.\./shared")


def test_no_user_facing_text_cites_files_outside_the_repository() -> None:
    offenders = []
    for folder in ("engine", "metrics", "configs", "docs", "scripts", "benchmarks"):
        for path in (REPO / folder).rglob("*"):
            if path.suffix not in {".py", ".md", ".toml", ".sh", ".yaml", ".txt"}:
                continue
            for lineno, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
                if OUTSIDE.search(line):
                    offenders.append(f"{path.relative_to(REPO)}:{lineno}: {line.strip()}")
    for lineno, line in enumerate((REPO / "README.md").read_text().splitlines(), 1):
        if OUTSIDE.search(line):
            offenders.append(f"README.md:{lineno}: {line.strip()}")
    assert not offenders, "\n".join(offenders)


def test_docs_links_resolve() -> None:
    """Every relative link in README.md and docs/*.md names a file that exists."""
    link = re.compile(r"\]\(([^)#:]+)(#[^)]*)?\)")
    missing = []
    for page in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        for target, _ in link.findall(page.read_text()):
            if not (page.parent / target).exists():
                missing.append(f"{page.relative_to(REPO)} -> {target}")
    assert not missing, missing
