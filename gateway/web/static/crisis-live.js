// The crisis queue, kept live where JavaScript runs: listens to /app/crisis/live (triage's crisis
// stream relayed as the person) and, on each change and once a minute (the time left moves on),
// fetches the queue's table again, rendered by the gateway, in place of the one on the page. A
// keyboard or screen reader user inside the table is not moved: the page says there are changes
// and the Refresh link takes them. Without JavaScript the page works the same with that link.
const region = document.querySelector("[data-crisis-live]");
const status = document.querySelector("[data-crisis-status]");
const REFRESH_EVERY_MS = 60 * 1000;

function say(text) {
  if (status) status.textContent = text;
}

async function refresh(reason) {
  if (!region) return;
  if (region.contains(document.activeElement) && document.activeElement !== document.body) {
    say("The queue has changed. Use Refresh the queue to see it.");
    return;
  }
  try {
    const answer = await fetch(region.dataset.crisisTable, {
      credentials: "same-origin",
      headers: { Accept: "text/html" },
    });
    if (!answer.ok || answer.redirected) {
      say("The queue could not be updated. Use Refresh the queue.");
      return;
    }
    const html = await answer.text();
    const parsed = new DOMParser().parseFromString(html, "text/html");
    region.replaceChildren(...parsed.body.childNodes);
    if (reason === "change") {
      const time = new Date().toLocaleTimeString("en-GB", { hour: "2-digit", minute: "2-digit" });
      say(`The queue was updated at ${time}.`);
    }
  } catch {
    say("The queue could not be updated. Use Refresh the queue.");
  }
}

if (region && "EventSource" in window) {
  const source = new EventSource(region.dataset.crisisLive);
  source.addEventListener("changed", () => refresh("change"));
  setInterval(() => {
    if (document.visibilityState === "visible") refresh("tick");
  }, REFRESH_EVERY_MS);
}
