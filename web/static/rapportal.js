/* Progressive enhancement only: every form works without JavaScript. */
(function () {
  "use strict";
  document.documentElement.classList.add("js");

  function round1(x) { return Math.round(x * 10) / 10; }

  function enhanceVas(box) {
    var min = parseFloat(box.dataset.min), max = parseFloat(box.dataset.max);
    var track = box.querySelector(".vas-track"), line = box.querySelector(".vas-line");
    var mark = box.querySelector(".vas-mark");
    var input = box.querySelector(".vas-input");
    var unset = box.dataset.unset;
    function show(value) {
      if (value === null) {
        mark.hidden = true;
        track.setAttribute("aria-valuenow", String(min));
        track.setAttribute("aria-valuetext", unset);
        return;
      }
      mark.hidden = false;
      mark.style.left = ((value - min) / (max - min) * 100) + "%";
      track.setAttribute("aria-valuenow", value.toFixed(1));
      track.setAttribute("aria-valuetext", value.toFixed(1));
    }
    function set(value) {
      value = Math.min(max, Math.max(min, round1(value)));
      input.value = value.toFixed(1);
      show(value);
    }
    function current() { return input.value === "" ? null : parseFloat(input.value); }
    function fromPointer(event) {
      // Measured on the drawn line; a touch past either end counts as that end.
      var rect = line.getBoundingClientRect();
      set(min + (event.clientX - rect.left) / rect.width * (max - min));
    }
    box.classList.add("enhanced");
    track.hidden = false;
    var initial = current();
    show(initial === null || isNaN(initial) ? null : initial);
    track.addEventListener("pointerdown", function (event) {
      track.setPointerCapture(event.pointerId);
      fromPointer(event);
      track.focus();
    });
    track.addEventListener("pointermove", function (event) {
      if (track.hasPointerCapture(event.pointerId)) { fromPointer(event); }
    });
    track.addEventListener("keydown", function (event) {
      var value = current();
      var steps = { ArrowRight: 0.1, ArrowUp: 0.1, ArrowLeft: -0.1, ArrowDown: -0.1, PageUp: 1, PageDown: -1 };
      if (event.key in steps) {
        // From no mark, the first key press starts at the end the key points away from.
        var start = value === null ? (steps[event.key] > 0 ? min : max) : value;
        set(start + steps[event.key]);
      } else if (event.key === "Home") {
        set(min);
      } else if (event.key === "End") {
        set(max);
      } else {
        return;
      }
      event.preventDefault();
    });
  }

  function enhancePages(form) {
    var pages = Array.prototype.slice.call(form.querySelectorAll(".page"));
    if (pages.length < 2) { return; }
    var index = 0;
    var firstError = form.querySelector(".has-error");
    if (firstError) { index = pages.indexOf(firstError.closest(".page")); }
    function go(to) {
      pages[index].classList.remove("current");
      index = to;
      pages[index].classList.add("current");
      var heading = pages[index].querySelector("legend, label, h2");
      window.scrollTo(0, form.offsetTop);
      if (heading) { heading.setAttribute("tabindex", "-1"); heading.focus(); }
    }
    pages[index].classList.add("current");
    form.addEventListener("click", function (event) {
      if (event.target.matches("[data-page-next]")) { go(index + 1); }
      if (event.target.matches("[data-page-back]")) { go(index - 1); }
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    Array.prototype.forEach.call(document.querySelectorAll("[data-vas]"), enhanceVas);
    Array.prototype.forEach.call(document.querySelectorAll("form.questionnaire"), function (form) {
      enhancePages(form);
      form.addEventListener("submit", function () {
        var button = form.querySelector("[data-submit]");
        // Let the first click through; further clicks do nothing while the page loads.
        window.setTimeout(function () { if (button) { button.disabled = true; } }, 0);
      });
    });
    var summary = document.getElementById("error-summary");
    if (summary) { summary.focus(); }
  });
})();
