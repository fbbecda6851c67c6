// Batchyard portal: the Add form's image type choices, and live regions that refresh
// without reloading the page. Plain JS, no libraries.
"use strict";

function showImageTypeFields(form) {
  const chosen = form.querySelector('input[name="image_type"]:checked');
  const kind = chosen ? chosen.value : "marketplace";
  form.querySelectorAll("[data-when]").forEach((el) => { el.hidden = el.dataset.when !== kind; });
  // a Shared Image's versions: those of the chosen definition ("latest" is the definition)
  const definition = form.querySelector("#gallery_definition");
  const version = form.querySelector("#gallery_image");
  for (const group of version.querySelectorAll("optgroup")) {
    const other = group.dataset.definition !== definition.value;
    group.hidden = other;
    group.disabled = other;
  }
  if (version.selectedOptions[0] && version.selectedOptions[0].parentElement.disabled) version.value = "";
  if (!version.value && definition.value) version.value = definition.value;  // latest, as Azure's portal starts
  // a custom or Shared Image's Publisher/Offer/Sku: only the node agent SKUs of the image's OS
  const image = { custom: form.querySelector("#custom_image"), gallery: definition }[kind];
  const os = image && image.selectedOptions[0] ? image.selectedOptions[0].dataset.os : "";
  const skus = form.querySelector("#image_sku");
  for (const option of skus.options) option.disabled = Boolean(os) && option.dataset.os !== os;
  if (skus.selectedOptions[0] && skus.selectedOptions[0].disabled) {
    const first = Array.from(skus.options).find((o) => !o.disabled);
    if (first) skus.value = first.value;
  }
}

// A live region is refreshed from the same page, fetched again: the server renders it.
// Refreshes pause while the user is focused inside it or selecting text there.
function refreshLive(regions) {
  if (document.hidden) return;
  fetch(location.href, { headers: { Accept: "text/html" }, credentials: "same-origin" })
    .then((r) => (r.ok && !r.redirected ? r.text() : null))
    .then((html) => {
      if (!html) return;
      const fresh = new DOMParser().parseFromString(html, "text/html").querySelectorAll("[data-live]");
      regions.forEach((region, i) => {
        const busy = region.contains(document.activeElement) && document.activeElement !== document.body;
        const selecting = String(window.getSelection()) !== "";
        if (fresh[i] && !busy && !selecting) region.innerHTML = fresh[i].innerHTML;
      });
    })
    .catch(() => {});
}

document.addEventListener("DOMContentLoaded", () => {
  const form = document.getElementById("pool-form");
  if (form) {
    form.addEventListener("change", () => showImageTypeFields(form));
    showImageTypeFields(form);
  }
  const regions = Array.from(document.querySelectorAll("[data-live]"));
  if (regions.length) setInterval(() => refreshLive(regions), 3000);
});
