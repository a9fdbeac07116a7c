// The collection page, live: each unfinished job's section follows /api/jobs/<id>/events
// (job_update, history_init, job_history) and fills its generation cards as steps and
// generations complete. Every value from the stream goes in as text or as a checked URL
// attribute, never as HTML. When the events token has expired (a reconnect is refused), the
// section asks the page's live URL for a new one and resumes after the last event it saw.
(function () {
  "use strict";

  var DOCUMENTS = ["text/html", "application/xhtml+xml", "image/svg+xml"];

  function safeUrl(url) {
    if (typeof url !== "string" || !url) { return null; }
    if (/^https?:\/\//i.test(url)) { return url; }
    if (url.charAt(0) === "/" && url.charAt(1) !== "/") { return url; }
    return null;
  }

  function kindOf(mime) {
    mime = typeof mime === "string" ? mime.toLowerCase() : "";
    if (DOCUMENTS.indexOf(mime) !== -1) { return "document"; }
    if (mime.indexOf("image/") === 0) { return "image"; }
    if (mime.indexOf("video/") === 0) { return "video"; }
    if (mime.indexOf("text/") === 0) { return "text"; }
    return "link";
  }

  function el(tag, attrs, text) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (name) { node.setAttribute(name, attrs[name]); });
    if (text !== undefined && text !== null) { node.textContent = String(text); }
    return node;
  }

  function stepFigure(step) {
    var response = step.nodeResponse || {};
    var mime = typeof response.mimeType === "string" ? response.mimeType : "";
    var kind = kindOf(mime);
    var src = safeUrl(response.src);
    var label = String(step.nodeAlias || step.nodeName || "");
    var figure = el("figure", {"class": "step", "data-step-id": String(step.id)});
    if (kind === "image" && src) {
      var link = el("a", {href: src, rel: "noopener noreferrer"});
      link.appendChild(el("img", {src: src, alt: label, loading: "lazy"}));
      figure.appendChild(link);
    } else if (kind === "document" && src) {
      figure.appendChild(el("iframe", {sandbox: "allow-scripts", src: src, title: label,
                                       referrerpolicy: "no-referrer", loading: "lazy"}));
    } else if (kind === "video" && src) {
      var video = el("video", {src: src, controls: "", loop: "", playsinline: "",
                               preload: "metadata"});
      video.muted = true;
      figure.appendChild(video);
    } else if (typeof response.data === "string") {
      figure.appendChild(el("pre", {}, response.data));
    } else if (src) {
      figure.appendChild(el("a", {href: src, rel: "noopener noreferrer"}, src));
    }
    var caption = el("figcaption", {}, label);
    if (mime) { caption.appendChild(document.createTextNode(" ")); caption.appendChild(el("small", {}, mime)); }
    figure.appendChild(caption);
    return figure;
  }

  function follow(section) {
    var finished = (section.dataset.finished || "").split(",");
    var connection = section.querySelector(".job-connection");
    var lastEventId = null;
    var source = null;
    var reconnectDelay = 1000;
    var jobFinished = finished.indexOf(section.dataset.status) !== -1;
    var lastStatus = section.dataset.status;

    function setText(selector, value) {
      var node = section.querySelector(selector);
      if (node) { node.textContent = value === null || value === undefined ? "" : String(value); }
    }

    function card(gid) {
      if (typeof gid !== "number" || Math.floor(gid) !== gid) { return null; }
      return section.querySelector('.item[data-gid="' + gid + '"]');
    }

    function setState(item, state, text) {
      item.dataset.state = state;
      item.querySelector(".item-status").textContent = text;
    }

    function addStep(item, step) {
      if (!step || typeof step !== "object") { return; }
      var steps = item.querySelector(".steps");
      var id = String(step.id);
      var present = Array.prototype.some.call(steps.children, function (node) {
        return node.dataset.stepId === id;
      });
      if (!present) { steps.appendChild(stepFigure(step)); }
    }

    function applyRow(row) {
      if (!row || typeof row !== "object") { return; }
      var data = row.data || {};
      var item = card(data.gid);
      if (!item) { return; }
      var message = String(row.message || "");
      if (row.status === "completed" && data.outputs && Array.isArray(data.outputs.steps)) {
        data.outputs.steps.forEach(function (step) { addStep(item, step); });
        setState(item, "completed", "completed");
      } else if (row.status === "failed") {
        setState(item, "failed", "failed");
        item.querySelector(".item-error").textContent = String(data.error || message);
      } else if (item.dataset.state === "completed" || item.dataset.state === "failed") {
        return;
      } else if (message === "Node started") {
        setState(item, "processing", "running " + String(data.node || ""));
      } else if (/^Node .* completed$/.test(message) && data.output) {
        addStep(item, {id: data.nodeId, nodeName: data.node, nodeResponse: data.output});
      } else if (/^Node .* retrying/.test(message)) {
        setState(item, "processing", message);
      }
    }

    function refreshWaiting() {
      fetch(section.dataset.liveUrl, {credentials: "same-origin"})
        .then(function (r) { return r.ok ? r.json() : null; })
        .then(function (body) { if (body && body.data) { setText(".job-waiting", body.data.waiting_text); } })
        .catch(function () { /* the next update tries again */ });
    }

    function onJobUpdate(ev) {
      var job = JSON.parse(ev.data);
      jobFinished = finished.indexOf(job.status) !== -1;
      setText(".job-status", job.status);
      section.dataset.status = job.status;
      var bar = section.querySelector(".job-progress");
      if (bar) { bar.value = job.progress; }
      setText(".job-error", job.error_message);
      if (jobFinished) {
        setText(".job-waiting", "");
      } else if (job.status !== lastStatus) {
        refreshWaiting();
      }
      lastStatus = job.status;
    }

    function remember(ev) { if (ev.lastEventId) { lastEventId = ev.lastEventId; } }

    function open(url) {
      source = new EventSource(url);
      source.onopen = function () { reconnectDelay = 1000; connection.textContent = "live"; };
      source.addEventListener("job_update", function (ev) { remember(ev); onJobUpdate(ev); });
      source.addEventListener("history_init", function (ev) {
        remember(ev);
        JSON.parse(ev.data).forEach(applyRow);
      });
      source.addEventListener("job_history", function (ev) {
        remember(ev);
        var row = JSON.parse(ev.data);
        applyRow(row);
        if (/^Node started$/.test(String(row.message || ""))) { setText(".job-waiting", ""); }
      });
      source.onerror = function () {
        if (jobFinished) {
          // a finished job's stream ends (a reconnect gets 204): nothing more will come
          source.close();
          connection.textContent = "finished";
          return;
        }
        if (source.readyState !== EventSource.CLOSED) {
          connection.textContent = "reconnecting\u2026";  // the browser retries by itself
          return;
        }
        // refused (the short-lived token expired): get a new one, resume after lastEventId
        connection.textContent = "reconnecting\u2026";
        source.close();
        setTimeout(function () {
          fetch(section.dataset.liveUrl, {credentials: "same-origin"})
            .then(function (r) { if (!r.ok) { throw new Error(r.status); } return r.json(); })
            .then(function (body) {
              setText(".job-waiting", body.data.waiting_text);
              open(body.data.url + (lastEventId ? "&lastEventId=" + encodeURIComponent(lastEventId) : ""));
            })
            .catch(function () { connection.textContent = "disconnected (reload the page)"; });
        }, reconnectDelay);
        reconnectDelay = Math.min(reconnectDelay * 2, 30000);
      };
    }

    if (jobFinished) { connection.textContent = "finished"; return; }
    if (!window.EventSource) { connection.textContent = "reload the page to see progress"; return; }
    open(section.dataset.eventsUrl);
  }

  function start() {
    Array.prototype.forEach.call(document.querySelectorAll("section.live-job"), follow);
    // one job per click: a second submit while the first is on its way is dropped
    Array.prototype.forEach.call(document.querySelectorAll("form.generate, form.reproduce"), function (form) {
      form.addEventListener("submit", function (ev) {
        if (form.dataset.sent) { ev.preventDefault(); return; }
        form.dataset.sent = "1";
      });
    });
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
