// Times in the viewer's time zone (templates/_macros/time.html). The server writes every moment
// in UTC, named; this rewrites them in the browser's zone, named ("8 Dec 2026, 11:00 CET": the
// day, the month's name, the year, a 24-hour clock), fills the forms' hidden "zone" field with the
// browser's IANA zone (the server reads a datetime-local value in it and stores UTC), names the
// zone beside the time fields, and echoes a chosen time in words under its field. Without
// JavaScript all of it stays UTC, named.
(function () {
  const zone = Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";
  const formats = {};

  function format(date, style) {
    if (!formats[style]) {
      formats[style] = new Intl.DateTimeFormat("en-GB", {
        timeZone: zone,
        weekday: style === "weekday" ? "short" : undefined,
        day: "numeric",
        month: "short",
        year: "numeric",
        hour: "2-digit",
        minute: "2-digit",
        hourCycle: "h23",
        timeZoneName: "short",
      });
    }
    const part = {};
    formats[style].formatToParts(date).forEach((p) => { part[p.type] = p.value; });
    const day = part.weekday ? `${part.weekday} ` : "";
    return `${day}${part.day} ${part.month} ${part.year}, ${part.hour}:${part.minute} ${part.timeZoneName}`;
  }

  function zoneName(date) {
    const name = new Intl.DateTimeFormat("en-GB", {timeZone: zone, timeZoneName: "short"})
      .formatToParts(date || new Date()).find((p) => p.type === "timeZoneName");
    return name ? name.value : zone;
  }

  function utcWords(date) {
    return date.toISOString().slice(11, 16) + " UTC";
  }

  function localise(root) {
    if (!root || !root.querySelectorAll) return;
    root.querySelectorAll("time[data-local]").forEach((time) => {
      const date = new Date(time.getAttribute("datetime"));
      if (isNaN(date)) return;
      time.textContent = format(date, time.dataset.local);
      time.title = `${date.toISOString().slice(0, 10)} ${utcWords(date)} (${zone})`;
    });
    root.querySelectorAll("[data-confirm-at]").forEach((form) => {
      const date = new Date(form.dataset.confirmAt);
      const text = form.getAttribute("hx-confirm");
      if (text && !isNaN(date)) {
        form.setAttribute("hx-confirm", text.replace(/ on [^?]*\?$/, ` on ${format(date, "date")}?`));
      }
    });
    root.querySelectorAll("input[data-browser-zone]").forEach((input) => { input.value = zone; });
    root.querySelectorAll("[data-zone-name]").forEach((name) => {
      name.textContent = zoneName();
      name.title = zone;
    });
    root.querySelectorAll("input[data-echo]").forEach((input) => {
      const echo = document.getElementById(input.dataset.echo);
      if (!echo || input.dataset.echoing) return;
      input.dataset.echoing = "1";
      const show = () => {
        const date = input.value ? new Date(input.value) : null;  // a datetime-local value: local time
        echo.textContent = date && !isNaN(date)
          ? `${format(date, "weekday")} (${utcWords(date)})`
          : (zoneName() === zone ? `In your time zone, ${zone}.` : `In your time zone, ${zone} (${zoneName()}).`);
      };
      input.addEventListener("input", show);
      show();
    });
  }

  document.addEventListener("DOMContentLoaded", () => localise(document.body));
  document.addEventListener("htmx:load", (event) => localise(event.detail.elt));
})();
