// The dashboard's only script: parts marked data-live are re-fetched every
// data-every milliseconds and swapped in when they changed (data-updates counts the
// swaps); parts marked data-load are fetched once, after the page.
"use strict";

async function fetchPart(element, url) {
  try {
    const response = await fetch(url, { credentials: "same-origin" });
    if (!response.ok) return;
    const html = await response.text();
    if (html !== element.dataset.last) {
      element.innerHTML = html;
      element.dataset.last = html;
      return true;
    }
  } catch (error) {
    element.dataset.error = String(error);
  }
  return false;
}

function start() {
  for (const element of document.querySelectorAll("[data-load]")) {
    fetchPart(element, element.dataset.load).then(() => {
      element.dataset.loaded = "true";
    });
  }
  for (const element of document.querySelectorAll("[data-live]")) {
    const every = Number(element.dataset.every) || 3000;
    element.dataset.last = element.innerHTML;
    const tick = async () => {
      if (await fetchPart(element, element.dataset.live)) {
        element.dataset.updates = String(Number(element.dataset.updates || 0) + 1);
      }
      setTimeout(tick, every);
    };
    setTimeout(tick, every);
  }
}

document.addEventListener("DOMContentLoaded", start);
