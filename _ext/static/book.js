// How the rendered book behaves for every reader (loaded on every page by _ext/book_site.py).
//
// * Figures open full size: a figure of a cell output is a link to its image file, so a tap on a
//   phone (where figures shrink to the column) shows it at full resolution, zoomable. The frames
//   of a precomputed explorer live in the page itself: a button under each explorer shows the
//   frame on view in a dialog at its own size, scrollable (Escape or the Close button ends it).
// * A formula that scrolls sideways can take the keyboard focus (arrow keys scroll it).
// * Names for assistive technology where the theme or the widget library leaves none, or one
//   that differs from the visible text: the frames and sliders of interactive cells (a frame's
//   alt text is the explorer's alt=..., kept in its data-spec), the search button, the colour
//   mode button, collapsed cells' toggles, the bibliography's list.
// Interactive cells render after the page has loaded, so the fixes run again when they appear.
(function () {
  "use strict";

  function linkFigures(root) {
    for (const img of root.querySelectorAll(
        "div.cell_output img:not(.jupyter-widgets img), div.output img:not(.jupyter-widgets img)")) {
      if (img.closest("a") || !img.getAttribute("src") || img.src.startsWith("data:")) continue;
      const a = document.createElement("a");
      a.href = img.getAttribute("src");
      a.className = "figure-full-size";
      a.title = "Open the figure full size";
      img.replaceWith(a);
      a.appendChild(img);
    }
  }

  function nameWidgets(root) {
    // the frames of a precomputed explorer: its alt text travels in the explorer's data-spec
    for (const spec of root.querySelectorAll(".tdlib-explorer-spec[data-spec]")) {
      let alt = "";
      try { alt = JSON.parse(spec.dataset.spec).alt || ""; } catch (e) {}
      const box = spec.closest(".tdlib-explorer");
      if (!alt || !box) continue;
      for (const img of box.querySelectorAll("img:not([alt])")) img.setAttribute("alt", alt);
    }
    // a slider's handle is named by the label of its widget ("D", "eta L", ...)
    for (const handle of root.querySelectorAll(".jupyter-widgets [role='slider']")) {
      if (handle.getAttribute("aria-label")) continue;
      const widget = handle.closest(".widget-slider, .widget-hslider, .jupyter-widgets");
      const label = widget && widget.querySelector(".widget-label");
      const text = label ? label.textContent.trim() : "";
      handle.setAttribute("aria-label", text || "slider");
    }
  }

  function showFrame(box) {
    const img = [...box.querySelectorAll("img")].find(i => i.offsetParent !== null);
    if (!img) return;
    const dialog = document.createElement("dialog");
    dialog.className = "tdlib-frame-dialog";
    dialog.setAttribute("aria-label", "Figure at full size");
    const close = document.createElement("button");
    close.type = "button";
    close.textContent = "Close";
    close.addEventListener("click", () => dialog.close());
    const big = document.createElement("img");
    big.src = img.src;
    big.alt = img.alt || "";
    dialog.append(close, big);
    dialog.addEventListener("close", () => dialog.remove());
    document.body.appendChild(dialog);
    dialog.showModal();
    close.focus();
  }

  function explorerButtons(root) {
    for (const box of root.querySelectorAll(".tdlib-explorer")) {
      if (box.querySelector(":scope > button.tdlib-full-size")) continue;
      const b = document.createElement("button");
      b.type = "button";
      b.className = "tdlib-full-size";
      b.textContent = "Open this frame full size";
      b.addEventListener("click", () => showFrame(box));
      box.appendChild(b);
    }
  }

  function nameTheme() {
    // the accessible name must contain the visible text ("Search" + "Ctrl+K" shown)
    for (const b of document.querySelectorAll("button.search-button-field[aria-label]")) {
      b.removeAttribute("aria-label");
    }
    for (const s of document.querySelectorAll("details > summary[aria-label]")) {
      s.removeAttribute("aria-label");
    }
    // the colour-mode button shows icons only: its name is its label ("Color mode"), not the
    // icons' tooltips ("Light", "Dark")
    for (const i of document.querySelectorAll("button.theme-switch-button i[title]")) {
      i.setAttribute("aria-hidden", "true");
    }
    // Font Awesome turns those icons into SVGs named by a <title>, counted as the button's text
    for (const svg of document.querySelectorAll("button.theme-switch-button svg")) {
      svg.setAttribute("aria-hidden", "true");
      svg.removeAttribute("role");
      svg.removeAttribute("aria-labelledby");
      for (const t of svg.querySelectorAll("title")) t.remove();
    }
    // docutils marks the citations' container as a list, but its entries are not list items
    for (const l of document.querySelectorAll(".citation-list[role='list']")) {
      if (![...l.children].every(c => c.getAttribute("role") === "listitem")) {
        l.removeAttribute("role");
      }
    }
  }

  // a formula that scrolls sideways (too wide for a phone) can be scrolled with the keyboard too
  function focusableScrollers() {
    for (const el of document.querySelectorAll("span.math, mjx-container[display='true']")) {
      // the visible rendering (mjx-math), not the hidden copy for screen readers
      const shown = el.querySelector("mjx-math");
      const wide = shown ? shown.getBoundingClientRect().width : el.scrollWidth;
      const scrolls = wide > el.clientWidth + 1;
      if (scrolls && !el.hasAttribute("tabindex")) {
        el.setAttribute("tabindex", "0");
        el.dataset.scrollFocus = "1";
      } else if (!scrolls && el.dataset.scrollFocus) {
        el.removeAttribute("tabindex");
        delete el.dataset.scrollFocus;
      }
    }
  }

  function run() {
    nameTheme();
    linkFigures(document);
    nameWidgets(document);
    explorerButtons(document);
    if (window.MathJax && MathJax.startup && MathJax.startup.promise) {
      MathJax.startup.promise.then(focusableScrollers);
    }
    window.addEventListener("resize", focusableScrollers);
    let pending = false;
    new MutationObserver(() => {
      if (pending) return;
      pending = true;
      requestAnimationFrame(() => { pending = false; nameTheme(); nameWidgets(document);
                                         explorerButtons(document); });
    }).observe(document.body, {childList: true, subtree: true});
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", run);
  else run();
})();
