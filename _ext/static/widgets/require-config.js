// The ipywidgets HTML manager finds its font files next to the AMD module
// "@jupyter-widgets/html-manager/dist/libembed-amd"; map that module folder to this folder,
// so the fonts load from the bundled copies on every page, whatever its depth.
(function () {
  var here = document.currentScript.src.replace(/[^/]*$/, "");
  window.require.config({ paths: { "@jupyter-widgets/html-manager/dist": here.replace(/\/$/, "") } });
})();
