// The admin job page, live: follows /api/jobs/<id>/events (job_update, history_init,
// job_history) and keeps status, progress and history current; the generations, node runs
// and outputs sections are re-fetched from the admin (throttled) as the job changes, and the
// job's times (started, completed, updated) are taken from them.
(function () {
  "use strict";

  function start() {
    var root = document.getElementById("job-live");
    if (!root || !window.EventSource) { return; }
    var finished = (root.dataset.finished || "").split(",");
    var connection = document.getElementById("job-live-connection");
    var historyBody = document.querySelector("#job-history tbody");
    var lastEventId = null;
    var source = null;
    var reloadTimer = null;
    var lastReload = 0;
    var reconnectDelay = 1000;
    var jobFinished = false;

    function setText(id, value) {
      var el = document.getElementById(id);
      if (el) { el.textContent = value === null || value === undefined ? "" : String(value); }
    }

    function cell(tr, value) {
      var td = document.createElement("td");
      td.textContent = value === null || value === undefined ? "" : String(value);
      tr.appendChild(td);
      return td;
    }

    function addHistoryRow(row) {
      if (!historyBody || historyBody.querySelector('tr[data-id="' + row.id + '"]')) { return; }
      var tr = document.createElement("tr");
      tr.dataset.id = row.id;
      cell(tr, row.id);
      cell(tr, (row.created_at || "").replace("T", " ").replace(/\+00:00$/, ""));
      cell(tr, row.status);
      cell(tr, row.message);
      cell(tr, row.data && row.data.gid !== undefined ? row.data.gid : "");
      cell(tr, row.retry_attempt);
      var td = document.createElement("td");
      var details = document.createElement("details");
      var summary = document.createElement("summary");
      summary.textContent = "data";
      var pre = document.createElement("pre");
      pre.textContent = JSON.stringify(row.data, null, 2);
      details.appendChild(summary);
      details.appendChild(pre);
      td.appendChild(details);
      tr.appendChild(td);
      historyBody.appendChild(tr);
    }

    function reloadSections() {
      reloadTimer = null;
      lastReload = Date.now();
      fetch(root.dataset.sectionsUrl, {credentials: "same-origin"})
        .then(function (r) { return r.ok ? r.text() : null; })
        .then(function (html) {
          if (html === null) { return; }
          document.getElementById("job-live-sections").innerHTML = html;
          var times = document.getElementById("job-live-times");
          if (times) {
            ["updated-at", "started-at", "completed-at"].forEach(function (name) {
              setText("job-live-" + name, times.getAttribute("data-" + name));
            });
          }
        })
        .catch(function () { /* the next update tries again */ });
    }

    function scheduleReload(now) {
      if (reloadTimer) { clearTimeout(reloadTimer); }
      var wait = now ? 0 : Math.max(0, 1000 - (Date.now() - lastReload));
      reloadTimer = setTimeout(reloadSections, wait);
    }

    function onJobUpdate(ev) {
      var job = JSON.parse(ev.data);
      jobFinished = finished.indexOf(job.status) !== -1;
      setText("job-live-status", job.status);
      setText("job-live-progress", job.progress);
      var bar = document.getElementById("job-live-progress-bar");
      if (bar) { bar.value = job.progress; }
      setText("job-live-error", job.error_message);
      scheduleReload(finished.indexOf(job.status) !== -1);
    }

    function remember(ev) { if (ev.lastEventId) { lastEventId = ev.lastEventId; } }

    function open(url) {
      source = new EventSource(url);
      source.onopen = function () { reconnectDelay = 1000; connection.textContent = "connected"; };
      source.addEventListener("job_update", function (ev) { remember(ev); onJobUpdate(ev); });
      source.addEventListener("history_init", function (ev) {
        remember(ev);
        JSON.parse(ev.data).forEach(addHistoryRow);
      });
      source.addEventListener("job_history", function (ev) {
        remember(ev);
        addHistoryRow(JSON.parse(ev.data));
      });
      source.onerror = function () {
        if (jobFinished) {
          // the stream of a finished job ends (a reconnect gets 204): nothing more will come
          source.close();
          connection.textContent = "finished";
          return;
        }
        if (source.readyState !== EventSource.CLOSED) {
          connection.textContent = "reconnecting\u2026";  // the browser retries by itself
          return;
        }
        // refused (the short-lived token expired): mint a new one and resume after lastEventId
        connection.textContent = "reconnecting\u2026";
        source.close();
        setTimeout(function () {
          fetch(root.dataset.tokenUrl, {credentials: "same-origin"})
            .then(function (r) { if (!r.ok) { throw new Error(r.status); } return r.json(); })
            .then(function (body) {
              open(body.url + (lastEventId ? "&lastEventId=" + encodeURIComponent(lastEventId) : ""));
            })
            .catch(function () { connection.textContent = "disconnected (reload the page)"; });
        }, reconnectDelay);
        reconnectDelay = Math.min(reconnectDelay * 2, 30000);
      };
    }

    open(root.dataset.eventsUrl);
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
