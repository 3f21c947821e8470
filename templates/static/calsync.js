/* calsync pages: small progressive enhancements. Everything works without this file. */
(function () {
  "use strict";

  var csrfMeta = document.querySelector('meta[name="csrf-token"]');
  var live = document.getElementById("live");

  function announce(text) {
    if (!live) return;
    live.textContent = "";
    window.setTimeout(function () { live.textContent = text; }, 50);
  }

  function each(selector, fn) {
    Array.prototype.forEach.call(document.querySelectorAll(selector), fn);
  }

  /* Copy buttons: hidden in the page, shown here because they need script. */
  function copyText(input) {
    if (navigator.clipboard && window.isSecureContext) {
      return navigator.clipboard.writeText(input.value);
    }
    input.focus();
    input.select();
    return new Promise(function (resolve, reject) {
      try { document.execCommand("copy") ? resolve() : reject(new Error("copy failed")); }
      catch (err) { reject(err); }
    });
  }

  each("[data-copy]", function (button) {
    var input = document.getElementById(button.getAttribute("data-copy"));
    if (!input) return;
    button.hidden = false;
    var label = button.textContent;
    button.addEventListener("click", function () {
      copyText(input).then(function () {
        button.textContent = "Copied";
        announce("Link copied to the clipboard.");
      }, function () {
        input.focus();
        input.select();
        announce("Press Ctrl+C or ⌘C to copy the selected link.");
      });
      window.setTimeout(function () { button.textContent = label; }, 2000);
    });
  });

  each("input.url", function (input) {
    input.addEventListener("focus", function () { input.select(); });
  });

  /* Settings: an option that needs another switched on follows that switch; the page already
     renders it disabled when the switch is off, so this only keeps it in step with clicks. */
  each("[data-depends-on]", function (control) {
    var toggle = document.getElementById(control.getAttribute("data-depends-on"));
    if (!toggle) return;
    toggle.addEventListener("change", function () { control.disabled = !toggle.checked; });
  });

  /* "1 day", "2 days": a unit agrees with the number typed beside it. */
  each("[data-unit-of]", function (unit) {
    var input = document.getElementById(unit.getAttribute("data-unit-of"));
    if (!input) return;
    input.addEventListener("input", function () {
      unit.textContent = unit.getAttribute(Number(input.value) === 1 ? "data-one" : "data-many");
    });
  });

  /* A message shown beside the form that was just sent (flash_here in _macros.html): focused, so
     the page scrolls to it and a screen reader reads it. */
  var placed = document.querySelector("[data-flash-here]");
  if (placed) {
    placed.focus();
    /* Scrolling to the address's #fragment happens after this script and takes the focus
       back in Chromium: focus again once the page has loaded. */
    window.addEventListener("load", function () {
      window.setTimeout(function () { if (document.activeElement !== placed) placed.focus(); }, 0);
    });
  }

  /* Actions with consequences worth reading ask in a page dialog (<dialog>, showModal keeps the
     focus inside it and Escape closes it): the form names the dialog, whose "confirm" button
     sends the form. Without script the form is sent at once, as before. */
  each("form[data-dialog]", function (form) {
    var dialog = document.getElementById(form.getAttribute("data-dialog"));
    if (!dialog || typeof dialog.showModal !== "function") return;
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      dialog.returnValue = "";
      dialog.showModal();
    });
    dialog.addEventListener("close", function () {
      if (dialog.returnValue === "confirm") HTMLFormElement.prototype.submit.call(form);
    });
  });

  /* Other actions that cannot be undone ask first, in the same kind of page dialog (never the
     browser's own box, which names the site instead of the action): the form's data-confirm is
     the question, data-confirm-yes the button that goes ahead (the form's own button's words
     by default), data-confirm-no the one that does not. One dialog serves every such form. */
  var asking = null;
  function askDialog() {
    if (asking) return asking;
    asking = document.createElement("dialog");
    asking.className = "dialog";
    asking.id = "confirm-dialog";
    asking.setAttribute("aria-labelledby", "confirm-dialog-text");
    asking.innerHTML = '<form method="dialog"><p id="confirm-dialog-text"></p><div class="form-foot">' +
      '<button type="submit" value="confirm" class="btn btn-danger"></button>' +
      '<button type="submit" value="keep" class="btn btn-secondary" autofocus></button></div></form>';
    document.body.appendChild(asking);
    asking.addEventListener("close", function () {
      var form = asking.pendingForm;
      asking.pendingForm = null;
      if (form && asking.returnValue === "confirm") HTMLFormElement.prototype.submit.call(form);
    });
    return asking;
  }

  each("form[data-confirm]", function (form) {
    form.addEventListener("submit", function (event) {
      var dialog = askDialog();
      if (typeof dialog.showModal !== "function") return;  /* sent at once, as without script */
      event.preventDefault();
      var own = form.querySelector('button[type="submit"], button:not([type])');
      var buttons = dialog.querySelectorAll("button");
      dialog.querySelector("p").textContent = form.getAttribute("data-confirm");
      buttons[0].textContent = form.getAttribute("data-confirm-yes") || (own ? own.textContent.trim() : "Go ahead");
      buttons[1].textContent = form.getAttribute("data-confirm-no") || "Go back";
      dialog.pendingForm = form;
      dialog.returnValue = "";
      dialog.showModal();
    });
  });

  /* Calendar colours from the CalDAV server (inline styles are not allowed by the CSP). */
  each(".swatch[data-color]", function (el) {
    var colour = el.getAttribute("data-color");
    if (/^#[0-9a-fA-F]{6,8}$/.test(colour)) el.style.backgroundColor = colour.slice(0, 7);
  });

  /* Sync now: POST through fetch (session cookie + CSRF header) and update the card in place. */
  function setField(card, name, text) {
    var el = card.querySelector('[data-field="' + name + '"]');
    if (el) el.textContent = text;
    return el;
  }

  function showNote(card, name, text) {
    var el = setField(card, name, text || "");
    if (el) el.hidden = !text;
  }

  function showResult(card, text, failed) {
    showNote(card, "result", text);
    var el = card.querySelector('[data-field="result"]');
    if (el) el.className = "note " + (failed ? "note-error" : "note-info");
  }

  each("form[data-sync]", function (form) {
    var card = document.getElementById(form.getAttribute("data-sync"));
    var button = form.querySelector("button");
    if (!card || !button || !window.fetch) return;
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      var label = button.textContent;
      button.disabled = true;
      button.textContent = "Syncing…";
      card.setAttribute("aria-busy", "true");
      fetch(form.action, {
        method: "POST",
        credentials: "same-origin",
        headers: { "Accept": "application/json", "X-CSRFToken": csrfMeta ? csrfMeta.content : "" }
      }).then(function (response) {
        return response.json().then(function (body) {
          if (!response.ok) throw new Error(body.error || "The sync could not be run; reload the page.");
          return body;
        });
      }).then(function (data) {
        var badge = setField(card, "status", data.status_label);
        if (badge) badge.className = "badge badge-" + data.status;
        var when = card.querySelector('[data-field="last-sync"]');
        if (when) {
          when.textContent = data.last_sync;
          if (data.last_success_at) when.setAttribute("title", data.last_success_at);
        }
        setField(card, "busy-count", String(data.busy_count));
        if (typeof data.failures === "number") {
          setField(card, "failures", String(data.failures));
          var row = card.querySelector('[data-field="failures-row"]');
          if (row) row.hidden = !data.failures;
        }
        /* A failure is said once, as an error: the result replaces the last-error box. */
        showNote(card, "last-error", data.failed ? "" : data.last_error);
        showResult(card, data.message, data.failed);
        announce(data.message);
      }).catch(function (err) {
        showResult(card, err.message, true);
        announce(err.message);
      }).then(function () {
        button.disabled = false;
        button.textContent = label;
        card.removeAttribute("aria-busy");
      });
    });
  });
})();
