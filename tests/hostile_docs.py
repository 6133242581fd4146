"""Documents built to make the chat page fetch an outside URL: images and links of every Markdown
and HTML form in headings, titles, passages and file names (REVIEW-ui-security H1, L2). Every
file says that the Quartz lamp warranty lasts 2 years, so each one is retrieved and cited for
"How long is the Quartz lamp warranty?".
"""

from __future__ import annotations

from pathlib import Path

from tests.pdfgen import make_pdf

QUESTION = "How long is the Quartz lamp warranty?"
FACT = "The Quartz lamp warranty lasts 2 years from the date of purchase."


def hostile_names(url: str) -> dict[str, str]:
    """File names that are Markdown images and links (no "/": `https:host?x` is absolute)."""
    host = url.split("//", 1)[1]
    return {
        "md": f"lamp ![c](https:{host}?name-md) [l](https:{host}?name-link).md",
        "pdf": f"manual ![p](https:{host}?name-pdf).pdf",
        "txt": f"notes <img src=https:{host}?name-txt>.txt",
    }


def write_hostile_docs(folder: Path, url: str) -> list[Path]:
    """The hostile files under `folder`; `url` (http://127.0.0.1:PORT) is where they point."""
    folder.mkdir(parents=True, exist_ok=True)
    names = hostile_names(url)
    image, link = f"![q]({url}/heading-image.png)", f"[manual]({url}/heading-link)"
    files = {
        "quartz-lamp.md": (
            f"# Quartz lamp {image} {link}\n\n{FACT} Keep the receipt. ![b]({url}/body.png)\n\n"
            f"## Setup <img src=\"{url}/h2-img.png\"> ![s](https:{url.split('//')[1]}?h2)\n\n"
            "Place the Quartz lamp on a flat surface and plug it in.\n"),
        "quartz-page.html": (
            f"<html><head><title>Quartz ![t]({url}/title.png) <img src='{url}/title-img.png'>"
            f"</title></head><body><h1>Quartz lamp guide ![h]({url}/h1.png)</h1>"
            f"<h2>Warranty <a href='{url}/h2-link'>terms</a> [x]({url}/h2-md-link)</h2>"
            f"<p>{FACT} Extended cover is sold separately.</p></body></html>"),
        names["md"]: (
            f"# Quartz warranty ![w]({url}/name-heading.png)\n\n{FACT} Registration is "
            "optional.\n"),
        names["txt"]: f"{FACT} These are plain notes about the Quartz lamp.\n",
    }
    paths = []
    for name, text in files.items():
        path = folder / name
        path.write_text(text, encoding="utf-8")
        paths.append(path)
    paths.append(make_pdf(folder / names["pdf"],
                          [f"Quartz lamp manual. {FACT} The bulb lasts 900 hours."],
                          title=f"Manual ![m]({url}/pdf-title.png)"))
    return paths
