// Staff pages: "Copy" buttons next to questionnaire links (the link stays selectable without script).
"use strict";
document.querySelectorAll("button.copy-link").forEach(function (button) {
  var input = document.getElementById(button.getAttribute("data-copy"));
  if (!input || !navigator.clipboard) { return; }
  button.hidden = false;
  button.addEventListener("click", function () {
    navigator.clipboard.writeText(input.value).then(function () {
      button.textContent = button.getAttribute("data-done") || "Copied";
    });
  });
});
