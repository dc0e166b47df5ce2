"""Number exercises per chapter: "Exercise 3.2" is the second exercise of the third chapter.

sphinx-exercise numbers exercises through Sphinx's figure numbering, which counts across the
whole book when the table of contents is not numbered. After Sphinx has assigned those numbers,
this rewrites the exercise entries of every page to (chapter, position in the chapter), where
the chapter is the page's position in the book's table of contents (the root page excluded).
References ({ref}, {numref}) and solution titles read the same table, so they follow.
"""


def _chapter_order(env):
    """Documents in table-of-contents order, depth first, without the root page."""
    order, seen = [], set()

    def walk(doc):
        for child in env.toctree_includes.get(doc, []):
            if child not in seen:
                seen.add(child)
                order.append(child)
                walk(child)

    walk(env.config.root_doc)
    return order


def renumber(app, env):
    chapters = {doc: i + 1 for i, doc in enumerate(_chapter_order(env))}
    changed = []
    for doc, by_type in env.toc_fignumbers.items():
        numbers = by_type.get("exercise")
        if not numbers or doc not in chapters:
            continue
        ordered = sorted(numbers, key=lambda label: numbers[label])
        new = {label: (chapters[doc], k + 1) for k, label in enumerate(ordered)}
        if new != numbers:
            by_type["exercise"] = new
            changed.append(doc)
    return changed


def setup(app):
    # after Sphinx's own figure numbering (TocTreeCollector, default priority 500)
    app.connect("env-get-updated", renumber, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
