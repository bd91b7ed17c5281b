// levere portal: upload files into an open delivery with tus-js-client (a stock tus client).
// Each file goes to the portal's tus endpoint under its own name, with the page's CSRF token in a
// header. tus-js-client remembers each upload's address in the browser's storage, so choosing the
// same file again (after a reload, or a dropped connection) resumes where the server says it stopped.
(function () {
  "use strict";
  var form = document.getElementById("upload-form");
  if (!form || !window.tus) {
    return;
  }
  var input = document.getElementById("upload-files");
  var list = document.getElementById("upload-progress");
  var size = window.levereSize;

  function row(file) {
    var li = document.createElement("li");
    var name = document.createElement("span");
    name.className = "upload-path";
    name.textContent = file.name;
    var bar = document.createElement("progress");
    bar.max = Math.max(file.size, 1);
    bar.value = 0;
    bar.setAttribute("aria-label", "Uploaded of " + file.name);
    var state = document.createElement("span");
    state.setAttribute("role", "status");
    state.textContent = "starting";
    li.append(name, " ", bar, " ", state);
    list.append(li);
    return { item: li, bar: bar, state: state };
  }

  function send(file) {
    var shown = row(file);
    var upload = new window.tus.Upload(file, {
      endpoint: form.dataset.endpoint,
      headers: { "Levere-Csrf": form.dataset.csrf },
      metadata: { project: form.dataset.project, delivery: form.dataset.delivery, path: file.name },
      chunkSize: 8 * 1024 * 1024,
      retryDelays: [0, 1000, 3000, 5000],
      removeFingerprintOnSuccess: true,
      onProgress: function (sent, total) {
        shown.bar.value = sent;
        shown.state.textContent = size(sent) + " of " + size(total);
      },
      onSuccess: function () {
        shown.bar.value = shown.bar.max;
        shown.state.textContent = "stored, checksums computed: reload the page to see it";
        shown.state.className = "upload-done";
      },
      onError: function (error) {
        var answer = error.originalResponse ? error.originalResponse.getBody() : "";
        var message = String(error);
        try {
          message = JSON.parse(answer).message || message;
        } catch (ignored) {
          // not levere's JSON: keep the client's own words
        }
        shown.state.textContent = "failed: " + message;
        shown.state.className = "error";
      },
    });
    upload.findPreviousUploads().then(function (previous) {
      if (previous.length) {
        upload.resumeFromPreviousUpload(previous[0]);
        shown.item.dataset.resumed = "true";
        shown.state.textContent = "resuming";
      }
      upload.start();
    });
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    Array.prototype.forEach.call(input.files, send);
    input.value = "";
  });
})();
