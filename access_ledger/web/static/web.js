// Select every item on this page at once (the page works without this script).
document.addEventListener("DOMContentLoaded", () => {
  const all = document.getElementById("select-all");
  if (!all) return;
  document.getElementById("select-all-wrap").hidden = false;
  all.addEventListener("change", () => {
    for (const box of document.querySelectorAll("input.select-item")) box.checked = all.checked;
  });
});
