"""Just enough Markdown -> HTML for the reports bertpipe writes (headings, tables, lists, images, code, bold)."""

import html
import re


def inline(text: str) -> str:
    text = html.escape(text, quote=False)
    text = re.sub(r"!\[([^\]]*)\]\(([^)]+)\)", r'<img alt="\1" src="\2">', text)
    text = re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", text)
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", text)


def to_html(markdown: str, title: str = "report") -> str:
    body, table, items = [], [], []

    def flush():
        if table:
            header, rows = table[0], [row for row in table[2:]]
            cells = lambda row, tag: "".join(f"<{tag}>{inline(cell.strip())}</{tag}>" for cell in row.strip().strip("|").split("|"))  # noqa: E731
            body.append("<table><thead><tr>" + cells(header, "th") + "</tr></thead><tbody>"
                        + "".join("<tr>" + cells(row, "td") + "</tr>" for row in rows) + "</tbody></table>")
            table.clear()
        if items:
            body.append("<ul>" + "".join(f"<li>{inline(item)}</li>" for item in items) + "</ul>")
            items.clear()

    for line in markdown.splitlines():
        if line.startswith("|"):
            table.append(line)
            continue
        if re.match(r"^\s*- ", line):
            items.append(line.strip()[2:])
            continue
        flush()
        heading = re.match(r"^(#{1,6}) (.*)", line)
        if heading:
            level = len(heading.group(1))
            body.append(f"<h{level}>{inline(heading.group(2))}</h{level}>")
        elif line.strip():
            body.append(f"<p>{inline(line)}</p>")
    flush()
    return f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title></head><body>" + "\n".join(body) + "</body></html>"
