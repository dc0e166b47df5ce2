// ipywidgets 8 typesets widget labels with the MathJax 2 call MathJax.Hub.Queue(["Typeset", MathJax.Hub, el]);
// this book loads MathJax 3, which has no Hub. Forward the call to MathJax 3 (no-op while MathJax is absent).
(function () {
  function bridge() {
    var mj = window.MathJax;
    if (!mj || mj.Hub) return;
    mj.Hub = {
      Queue: function (cmd) {
        var el = cmd && cmd[2];
        if (window.MathJax.typesetPromise) {
          window.MathJax.typesetPromise(el ? [el] : undefined).catch(function (e) { console.warn("MathJax:", e); });
        }
      }
    };
  }
  bridge();
  document.addEventListener("DOMContentLoaded", bridge);
})();
