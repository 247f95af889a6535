// Draws every Vega-Lite output of the page (a div.vega-output followed by its specification in a
// <script type="application/json">) with the book's own copy of vega-embed: the kernel-free
// explorers. See docs/_ext/vega_outputs.py.
document.addEventListener("DOMContentLoaded", () => {
  for (const target of document.querySelectorAll("div.vega-output")) {
    const spec = JSON.parse(target.nextElementSibling.textContent);
    vegaEmbed(target, spec, { renderer: "svg", actions: false })
      .then((result) => {
        target.vegaView = result.view; // for the browser tests
        target.dataset.drawn = "true";
      })
      .catch((error) => console.error("vega-output:", error));
  }
});
