"""The README and docs/*.md: the README stays short, links every docs page,
and no relative link or image (file or #heading) points at nothing."""

import glob
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README_MAX_LINES = 250
# The pages the README's documentation list must link.
DOCS_PAGES = ("configs", "environments", "checkpoints", "evaluation", "scale",
              "sweeps", "losses", "architecture", "results", "performance")

_FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.M | re.S)
_CODE_SPAN = re.compile(r"`[^`\n]*`")
# [text](target) and ![alt](target); an optional "title" after the target.
_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*#*\s*$", re.M)


def _markdown_files() -> list[str]:
  return [os.path.join(ROOT, "README.md")] + sorted(
      glob.glob(os.path.join(ROOT, "docs", "*.md")))


def _prose(text: str) -> str:
  """`text` without fenced code blocks and code spans (no links there)."""
  return _CODE_SPAN.sub("", _FENCE.sub("", text))


def links(text: str) -> list[str]:
  """Targets of the inline links and images of a markdown text."""
  return _LINK.findall(_prose(text))


def _slug(heading: str) -> str:
  """The anchor GitHub gives a heading: lower case, punctuation dropped,
  spaces turned into hyphens."""
  heading = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)
  heading = re.sub(r"[^\w\- ]", "", heading.strip().lower())
  return heading.replace(" ", "-")


def anchors(text: str) -> set[str]:
  """Anchors of a markdown text's headings (repeats get -1, -2, ...)."""
  seen: dict[str, int] = {}
  result = set()
  for heading in _HEADING.findall(_FENCE.sub("", text)):
    slug = _slug(heading)
    count = seen.get(slug, 0)
    seen[slug] = count + 1
    result.add(slug if count == 0 else f"{slug}-{count}")
  return result


def broken_links(path: str) -> list[str]:
  """Relative links and images of the markdown file `path` whose file, or
  whose #anchor in a markdown file, does not exist."""
  with open(path, encoding="utf-8") as f:
    text = f.read()
  broken = []
  for target in links(text):
    if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):  # http:, mailto:, ...
      continue
    file_part, _, anchor = target.partition("#")
    linked = (os.path.normpath(os.path.join(os.path.dirname(path), file_part))
              if file_part else path)
    if not os.path.exists(linked):
      broken.append(f"{target} (no file {os.path.relpath(linked, ROOT)})")
      continue
    if anchor and linked.endswith(".md"):
      with open(linked, encoding="utf-8") as f:
        if anchor not in anchors(f.read()):
          broken.append(f"{target} (no heading #{anchor})")
  return broken


def test_readme_is_short():
  with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
    num_lines = len(f.read().splitlines())
  assert num_lines <= README_MAX_LINES, (
      f"README.md has {num_lines} lines; move detail into docs/")


def test_every_relative_link_and_image_exists():
  broken = {os.path.relpath(path, ROOT): broken_links(path)
            for path in _markdown_files()}
  broken = {path: targets for path, targets in broken.items() if targets}
  assert not broken, f"broken links: {broken}"


def test_readme_links_every_docs_page():
  with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
    linked = {target.partition("#")[0] for target in links(f.read())}
  missing = [page for page in DOCS_PAGES if f"docs/{page}.md" not in linked]
  assert not missing, f"README.md does not link docs/ pages {missing}"


def test_the_checks_catch_a_broken_link(tmp_path):
  (tmp_path / "page.md").write_text("# A page\n\n## Its part\n")
  (tmp_path / "image.png").write_bytes(b"")
  doc = tmp_path / "doc.md"
  doc.write_text(
      "# Doc\n[ok](page.md) [ok](page.md#its-part) ![ok](image.png) "
      "[ok](#doc) [web](https://example.org/x.md) `[code](missing.md)`\n"
      "```\n[in a block](missing.md)\n```\n"
      "[gone](missing.md) ![gone](missing.png) [no part](page.md#other) "
      "[no part](#nowhere)\n")
  broken = broken_links(str(doc))
  assert [b.split()[0] for b in broken] == [
      "missing.md", "missing.png", "page.md#other", "#nowhere"]


def test_heading_anchors_follow_github():
  text = ("# MinAtar: `configs/minatar.py`\n## Anakin (gymnax), 2-core CPU\n"
          "## Keys\n### Keys\n```\n# not a heading\n```\n")
  assert anchors(text) == {"minatar-configsminatarpy",
                           "anakin-gymnax-2-core-cpu", "keys", "keys-1"}
