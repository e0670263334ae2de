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

  // --- Answers survive a dropped connection (link forms marked data-keep) ---------------------------------------
  // The answers are sent with fetch, so a failed send leaves the page and its answers in place. They are also kept
  // in sessionStorage under the link's own key until the server has answered: a reload or a discarded tab brings
  // them back. The tab's session ends that storage, and an entry older than the form's lifetime is dropped, so a
  // shared tablet does not hand one client's answers to the next.
  var KEEP_PREFIX = "rapportal:answers:";

  function storage() {
    try { return window.sessionStorage; } catch (error) { return null; }  // blocked storage: fetch still helps
  }

  function keepKey(path) { return KEEP_PREFIX + path; }

  function forget(path) {
    var store = storage();
    if (store) { store.removeItem(keepKey(path)); }
  }

  function dropStale(maxAgeSeconds) {
    var store = storage();
    if (!store) { return; }
    for (var i = store.length - 1; i >= 0; i -= 1) {
      var key = store.key(i);
      if (key && key.indexOf(KEEP_PREFIX) === 0) {
        var saved = null;
        try { saved = JSON.parse(store.getItem(key)); } catch (error) { saved = null; }
        if (!saved || !(Date.now() - saved.saved < maxAgeSeconds * 1000)) { store.removeItem(key); }
      }
    }
  }

  function answersOf(form) {
    var pairs = [];
    new FormData(form).forEach(function (value, name) {
      if (name !== "csrf_token" && typeof value === "string") { pairs.push([name, value]); }
    });
    return pairs;
  }

  function keep(form, path) {
    var store = storage();
    if (!store) { return; }
    try {
      store.setItem(keepKey(path), JSON.stringify({ saved: Date.now(), answers: answersOf(form) }));
    } catch (error) { /* storage full or refused: the answers stay on the page */ }
  }

  function itemFields(form) {
    return Array.prototype.filter.call(form.elements, function (field) {
      return field.name && field.name !== "csrf_token" && field.type !== "hidden";
    });
  }

  function restore(form, path) {
    // Only into an untouched form: answers shown by the server (after an error) are the newer ones.
    var store = storage();
    if (!store) { return false; }
    var fields = itemFields(form);
    var touched = fields.some(function (field) {
      return (field.type === "radio" || field.type === "checkbox") ? field.checked : field.value !== "";
    });
    var saved = null;
    try { saved = JSON.parse(store.getItem(keepKey(path))); } catch (error) { saved = null; }
    if (touched || !saved || !saved.answers || !saved.answers.length) { return false; }
    var byName = {};
    saved.answers.forEach(function (pair) { (byName[pair[0]] = byName[pair[0]] || []).push(pair[1]); });
    var used = {};
    fields.forEach(function (field) {
      var values = byName[field.name];
      if (!values) { return; }
      if (field.type === "radio" || field.type === "checkbox") {
        field.checked = values.indexOf(field.value) !== -1;
      } else {
        var index = used[field.name] || 0;
        field.value = index < values.length ? values[index] : "";
        used[field.name] = index + 1;
      }
    });
    return true;
  }

  function say(form, text, failed) {
    var region = form.querySelector("[data-send-status]");
    if (!region) { return; }
    region.classList.toggle("alert", !!failed);
    region.textContent = text;
  }

  function showPage(html) {
    // The server's answer replaces the page, as a navigation would, without leaving the link's address.
    var next = new DOMParser().parseFromString(html, "text/html");
    document.title = next.title;
    document.documentElement.lang = next.documentElement.lang;
    document.body.replaceWith(document.adoptNode(next.body));
    window.scrollTo(0, 0);
    enhance(document);
    if (!document.getElementById("error-summary")) {
      var heading = document.querySelector("main h1");
      if (heading) { heading.setAttribute("tabindex", "-1"); heading.focus(); }
    }
  }

  function enhanceSending(form) {
    var path = new URL(form.action, location.href).pathname;
    var button = form.querySelector("[data-submit]");
    var sending = false;
    dropStale(parseFloat(form.dataset.keepSeconds) || 86400);
    if (restore(form, path)) { say(form, form.dataset.restoredText, false); }
    form.addEventListener("change", function () {
      if (storage() && storage().getItem(keepKey(path)) !== null) { keep(form, path); }
    });
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      if (sending) { return; }  // a double click sends once
      sending = true;
      keep(form, path);
      form.setAttribute("data-sending", "");
      if (button) { button.disabled = true; }
      say(form, form.dataset.sendingText, false);
      var body = new URLSearchParams(new FormData(form));
      function failed() {
        sending = false;
        form.removeAttribute("data-sending");
        if (button) { button.disabled = false; }
        say(form, form.dataset.failedText, true);
      }
      fetch(form.action, { method: "POST", body: body, credentials: "same-origin", cache: "no-store" })
        .then(function (response) {
          // No answer, a server error or a busy server: nothing was stored, so the answers stay here.
          if (response.status >= 500 || response.status === 429) { failed(); return null; }
          return response.text().then(function (html) {
            var stored = response.ok && /data-receipt=/.test(html);
            if (stored || response.status === 404 || response.status === 410) { forget(path); }
            showPage(html);
          });
        })
        .catch(failed);
    });
  }

  function enhance(root) {
    Array.prototype.forEach.call(root.querySelectorAll("form.questionnaire[data-keep]"), enhanceSending);
    Array.prototype.forEach.call(root.querySelectorAll("[data-vas]"), enhanceVas);
    Array.prototype.forEach.call(root.querySelectorAll("form.questionnaire"), function (form) {
      enhancePages(form);
      if (form.hasAttribute("data-keep")) { return; }
      form.addEventListener("submit", function () {
        var button = form.querySelector("[data-submit]");
        // Let the first click through; further clicks do nothing while the page loads.
        window.setTimeout(function () { if (button) { button.disabled = true; } }, 0);
      });
    });
    if (root.querySelector("[data-receipt]")) { forget(location.pathname); }  // acknowledged: nothing to keep
    var summary = root.getElementById("error-summary");
    if (summary) { summary.focus(); }
  }

  document.addEventListener("DOMContentLoaded", function () { enhance(document); });
})();
