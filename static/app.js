// htmx configuration, once for the whole dashboard.
// htmx 2 does not swap 4xx/5xx responses by default. Validation errors come back as 422
// form fragments that replace the form; other errors come back as a message fragment that
// the server retargets (HX-Retarget: #flash). A 4xx is an answer the page shows, not a
// script error; a 5xx is also reported as an error.
htmx.config.responseHandling = [
  {code: "204", swap: false},
  {code: "[234]..", swap: true},
  {code: "5..", swap: true, error: true},
];
// Fresh pages: htmx keeps no snapshots of pages, and a history entry it has no snapshot of is
// loaded again from the server (a full load, the server answers with Cache-Control: no-store).
htmx.config.historyCacheSize = 0;
htmx.config.refreshOnHistoryMiss = true;
// No inline handlers anywhere (the CSP allows scripts from this origin only, no eval).
htmx.config.allowEval = false;
document.documentElement.classList.add("js");

// A page the browser restores from its back/forward cache is loaded again.
window.addEventListener("pageshow", (event) => {
  if (event.persisted) window.location.reload();
});

// The bulk upload's progress bar follows the request body being sent.
document.addEventListener("htmx:xhr:progress", (event) => {
  const bar = document.getElementById("bulk-upload");
  if (bar && event.target.id === "bulk-add" && event.detail.total) {
    bar.value = event.detail.loaded / event.detail.total * 100;
  }
});

// A form that comes back with problems: bring the first one into view where the form is, and
// put the cursor on its field.
document.addEventListener("htmx:afterSwap", (event) => {
  if (event.detail.xhr && event.detail.xhr.status === 422) {
    const root = document.getElementById(event.detail.target.id) || event.detail.target;
    const problem = root.querySelector && root.querySelector(".field-error, .alert-error");
    if (problem) problem.scrollIntoView({block: "nearest"});
    const field = root.querySelector && root.querySelector("[aria-invalid=true]");
    if (field) field.focus({preventScroll: true});
  }
  showDismiss();
});

// Messages (the flash area floats at the bottom of the window with JavaScript, so a message
// is seen wherever the page is scrolled): each can be dismissed; success ones fade after a while.
function showDismiss() {
  document.querySelectorAll("#flash .alert").forEach((alert) => {
    let button = alert.querySelector(".dismiss");
    if (!button) {
      button = document.createElement("button");
      Object.assign(button, {type: "button", className: "dismiss", hidden: true, textContent: "×"});
      button.setAttribute("aria-label", "Dismiss");
      alert.prepend(button);
    }
    if (button.hidden) {
      button.hidden = false;
      button.addEventListener("click", () => alert.remove());
      if (alert.classList.contains("alert-success")) setTimeout(() => alert.remove(), 12000);
    }
  });
}
document.addEventListener("DOMContentLoaded", showDismiss);
