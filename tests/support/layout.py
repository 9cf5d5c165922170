"""Layout checks run in the page: nothing scrolls sideways and no control is cut off."""

from __future__ import annotations

# Every visible control must lie inside the window and inside every ancestor that clips its
# content (overflow other than visible), and show all of its own text (no inner overflow).
CLIPPED_CONTROLS = """() => {
  const width = window.innerWidth;
  const controls = document.querySelectorAll(
    "a[href], button, input:not([type=hidden]), select, textarea, summary, label.radio");
  const problems = [];
  for (const el of controls) {
    const style = getComputedStyle(el);
    const box = el.getBoundingClientRect();
    if (style.visibility === "hidden" || style.display === "none" || box.width === 0 || box.height === 0) continue;
    if (el.closest(".visually-hidden")) continue;
    const name = (el.innerText || el.value || el.getAttribute("aria-label") || el.name || el.tagName).trim().slice(0, 40);
    if (box.left < -1 || box.right > width + 1) problems.push(`${name}: outside the window (${box.left}-${box.right} of ${width})`);
    for (let up = el.parentElement; up && up !== document.body; up = up.parentElement) {
      const s = getComputedStyle(up);
      if (s.overflowX === "visible" && s.overflowY === "visible") continue;
      const clip = up.getBoundingClientRect();
      if (box.left < clip.left - 1 || box.right > clip.right + 1) {
        problems.push(`${name}: cut off by ${up.tagName.toLowerCase()}.${up.className} (${box.left}-${box.right} in ${clip.left}-${clip.right})`);
        break;
      }
    }
    if (["BUTTON", "A"].includes(el.tagName) && el.scrollWidth > el.clientWidth + 1 && style.overflow !== "visible")
      problems.push(`${name}: its text is cut off`);
  }
  return problems;
}"""

SIDEWAYS_SCROLL = "() => document.documentElement.scrollWidth - window.innerWidth"
# What sticks out on the right: the innermost elements wider than the window (for the message).
STICKING_OUT = """() => [...document.querySelectorAll("body *")]
  .filter((el) => Math.max(el.getBoundingClientRect().right, el.getBoundingClientRect().left + el.scrollWidth)
                    > window.innerWidth + 1
                  && ![...el.children].some((c) => c.getBoundingClientRect().right > window.innerWidth + 1))
  .slice(0, 8).map((el) => `${el.tagName.toLowerCase()}.${el.className}#${el.id}: ${Math.round(el.getBoundingClientRect().right)}`)"""


def assert_fits(page, where: str = "") -> None:
    """No horizontal scroll of the page and no clipped control, at the current viewport."""
    overflow = page.evaluate(SIDEWAYS_SCROLL)
    assert overflow <= 0, (
        f"{where or page.url}: the page scrolls sideways by {overflow} px; "
        f"sticking out: {page.evaluate(STICKING_OUT)}"
    )
    problems = page.evaluate(CLIPPED_CONTROLS)
    assert not problems, f"{where or page.url}: {problems}"
