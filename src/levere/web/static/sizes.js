// levere portal: byte counts as people read them (binary units, one decimal), for the upload
// scripts of the delivery page.
(function () {
  "use strict";
  var units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];

  window.levereSize = function (n) {
    var value = n;
    for (var i = 0; i < units.length; i++) {
      if (Math.abs(value) < 1024 || i === units.length - 1) {
        return i === 0 ? value.toFixed(0) + " B" : value.toFixed(1) + " " + units[i];
      }
      value /= 1024;
    }
    return n + " B";
  };
})();
