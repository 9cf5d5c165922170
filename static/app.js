// htmx configuration, once for the whole dashboard.
// htmx 2 does not swap 4xx/5xx responses by default. Validation errors come back as 422
// form fragments that replace the form; other errors come back as a message fragment that
// the server retargets (HX-Retarget: #flash).
htmx.config.responseHandling = [
  {code: "204", swap: false},
  {code: "[23]..", swap: true},
  {code: "422", swap: true},
  {code: "[45]..", swap: true, error: true},
];
htmx.config.historyCacheSize = 0;
// No inline handlers anywhere (the CSP allows scripts from this origin only, no eval).
htmx.config.allowEval = false;

// The bulk upload's progress bar follows the request body being sent.
document.addEventListener("htmx:xhr:progress", (event) => {
  const bar = document.getElementById("bulk-upload");
  if (bar && event.target.id === "bulk-add" && event.detail.total) {
    bar.value = event.detail.loaded / event.detail.total * 100;
  }
});
