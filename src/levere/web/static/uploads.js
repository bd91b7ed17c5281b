// levere portal: live progress of a delivery's uploads in flight.
// The page lists them when it is drawn (and works without this script); this script asks the
// listing's address again every few seconds and redraws the list, so an upload running from
// another client (levere deliver, a tus client) is seen moving.
(function () {
  "use strict";
  var list = document.getElementById("uploads");
  if (!list) {
    return;
  }
  var url = list.getAttribute("data-poll");
  var empty = document.getElementById("uploads-empty");
  var size = window.levereSize;

  function item(upload) {
    var li = document.createElement("li");
    var name = document.createElement("span");
    name.className = "upload-path";
    name.textContent = upload.path;
    var bar = document.createElement("progress");
    bar.max = Math.max(upload.length, 1);
    bar.value = upload.offset;
    bar.setAttribute("aria-label", "Uploaded of " + upload.path);
    var done = document.createElement("span");
    var percent = upload.length ? Math.floor((100 * upload.offset) / upload.length) : 100;
    done.textContent = size(upload.offset) + " of " + size(upload.length) + " (" + percent + "%)";
    li.append(name, " ", bar, " ", done);
    return li;
  }

  function draw(uploads) {
    list.replaceChildren.apply(list, uploads.map(item));
    if (empty) {
      empty.hidden = uploads.length > 0;
    }
  }

  function poll() {
    fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (response) {
        return response.ok ? response.json() : null;
      })
      .then(function (found) {
        if (found) {
          draw(found.uploads);
        }
        window.setTimeout(poll, 3000);
      })
      .catch(function () {
        window.setTimeout(poll, 10000);
      });
  }

  window.setTimeout(poll, 3000);
})();
