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
    document.querySelectorAll("#flash .alert-success").forEach((alert) => alert.remove());
  }
  showDismiss();
});

// Messages: never over a control, never beside a field error, gone at the next action.
// A message an htmx action brings is shown in the page's flow right after the card that asked
// (the card of the request's target): it pushes what follows down instead of floating over it,
// at any width, and nothing above it moves. The next action the user takes (a submit, a click,
// typing: a trusted event; polls and the page's own refreshes are not) clears it first, so a
// "saved" message from one save never stands beside the problems of the next. A message that
// comes with a page load (a post without htmx, then a redirect) is shown under the header.
let messageAnchor = null;
function clearMessages() {
  const area = document.getElementById("flash");
  if (area) area.replaceChildren();
}
document.addEventListener("htmx:beforeRequest", (event) => {
  const config = event.detail.requestConfig || {};
  const trigger = config.triggeringEvent;
  if (!trigger || !trigger.isTrusted) return;
  clearMessages();
  const target = event.detail.target;
  const from = (target && target.closest && target.closest(".card")) || event.detail.elt.closest(".card, form");
  messageAnchor = from && from.id ? from.id : null;
});
function placeMessages() {
  const area = document.getElementById("flash");
  if (!area || !area.querySelector(".alert")) return;
  const anchor = messageAnchor && document.getElementById(messageAnchor);
  if (anchor && !anchor.contains(area) && anchor.nextElementSibling !== area) anchor.after(area);
  if (anchor) area.scrollIntoView({block: "nearest"});
}
document.addEventListener("htmx:afterSettle", placeMessages);
// Typing or choosing in any form is the user's next action too: the message goes (only a
// trusted event, the user's own, does this; the page's refreshes, polls and the values the
// scripts fill in never do). Dismiss buttons and links are covered by the requests they make.
function clearOnUserInput(event) {
  if (!event.isTrusted || !event.target.closest || !event.target.closest("form")) return;
  if (document.querySelector("#flash .alert")) clearMessages();
}
document.addEventListener("input", clearOnUserInput);
document.addEventListener("change", clearOnUserInput);
// A swap that would replace the part of the page the messages sit in puts them back home first
// (before <main>), so the area every answer's message is swapped into is never lost.
function rescueMessages(event) {
  const area = document.getElementById("flash");
  const target = event.detail.target;
  if (area && target && target !== area && target.contains && target.contains(area)) {
    document.querySelector("main").before(area);
  }
}
document.addEventListener("htmx:beforeSwap", rescueMessages);
document.addEventListener("htmx:oobBeforeSwap", rescueMessages);
document.addEventListener("htmx:oobAfterSwap", placeMessages);

// Each message can be dismissed.
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
    }
  });
}
document.addEventListener("DOMContentLoaded", showDismiss);

// "Download the conflicting ids": the bulk-add form (its pasted ids and its chosen file) is posted
// to the button's formaction and the CSV answer saved as a file, the form staying as it is.
// (Without JavaScript the button submits the form natively and the browser saves the answer.)
document.addEventListener("click", async (event) => {
  const button = event.target.closest && event.target.closest("button[data-download]");
  if (!button || !button.form) return;
  event.preventDefault();
  button.disabled = true;
  try {
    const response = await fetch(button.formAction, {method: "POST", body: new FormData(button.form)});
    const type = response.headers.get("Content-Type") || "";
    if (!response.ok || !type.startsWith("text/csv")) {
      button.insertAdjacentHTML("afterend", '<p class="field-error" role="alert">The list could not be read again: choose the file again and retry.</p>');
      return;
    }
    const name = (/filename="([^"]+)"/.exec(response.headers.get("Content-Disposition") || "") || [])[1] || "conflicts.csv";
    const link = Object.assign(document.createElement("a"), {href: URL.createObjectURL(await response.blob()), download: name});
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(link.href), 60000);
  } finally {
    button.disabled = false;
  }
});
