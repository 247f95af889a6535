// Inlined by Sphinx before MathJax 3 loads (conf.py: mathjax_config_path), after the options
// that MyST sets in window.MathJax.
//
// The ipywidgets HTML manager typesets widget labels through MathJax 2's API,
// MathJax.Hub.Queue(["Typeset", MathJax.Hub, element]), whenever window.MathJax exists. MathJax 3
// has no Hub, so each label would raise an error: this small Hub hands those requests to MathJax
// 3's typesetPromise, holding the ones made before MathJax has started.
(function () {
  const waiting = [];
  function typeset(element) {
    const mathjax = window.MathJax;
    if (mathjax && mathjax.typesetPromise) {
      mathjax.startup.promise = mathjax.startup.promise.then(() =>
        mathjax.typesetPromise(element ? [element] : undefined),
      );
    } else {
      waiting.push(element || document.body);
    }
  }
  const Hub = {
    Queue(...commands) {
      for (const command of commands) {
        if (Array.isArray(command) && command[0] === "Typeset") typeset(command[2]);
      }
    },
  };
  const config = window.MathJax || {};
  const startup = config.startup || {};
  config.startup = Object.assign({}, startup, {
    ready() {
      if (startup.ready) startup.ready();
      else window.MathJax.startup.defaultReady();
      const mathjax = window.MathJax;
      mathjax.Hub = Hub;
      if (waiting.length) {
        const elements = waiting.splice(0);
        mathjax.startup.promise = mathjax.startup.promise.then(() =>
          mathjax.typesetPromise(elements),
        );
      }
    },
  });
  config.Hub = Hub;
  window.MathJax = config;
})();
