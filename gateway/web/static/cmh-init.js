// Starts NHS.UK frontend's components (the header's menu, error summary focus, buttons, radios)
// from its vendored bundle. A file, not an inline script: the pages' Content-Security-Policy is
// script-src 'self'. Its template's inline snippet marks the body `js-enabled` and, where ES
// modules run, `nhsuk-frontend-supported`; a module script only runs where they do, so this one
// adds both, then initialises (initAll checks `nhsuk-frontend-supported` first).
import { initAll } from "./nhsuk/nhsuk-frontend-10.6.1.min.js";

document.body.classList.add("js-enabled", "nhsuk-frontend-supported");
initAll();
