// The collector's page: sign in with an injected wallet (EIP-4361 via personal_sign), keep the
// collector token in sessionStorage, and list purchases and collected generations from the API.
// Every value from the API goes in as text or as a checked URL attribute, never as HTML.
(function () {
  "use strict";

  var KEY = "emprops.collectorToken";

  function el(tag, attrs, text) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (name) { node.setAttribute(name, attrs[name]); });
    if (text !== undefined && text !== null) { node.textContent = String(text); }
    return node;
  }

  function safeUrl(url) {
    return typeof url === "string" && /^https?:\/\//i.test(url) ? url : null;
  }

  function api(root, path, options) {
    var token = sessionStorage.getItem(KEY);
    options = options || {};
    options.headers = options.headers || {};
    if (token) { options.headers.Authorization = "Bearer " + token; }
    return fetch(root + path, options).then(function (response) {
      return response.json().then(function (body) {
        if (!response.ok) { throw new Error(body.error || ("HTTP " + response.status)); }
        return body.data;
      });
    });
  }

  function siweMessage(address, chainId, nonce) {
    return [location.host + " wants you to sign in with your Ethereum account:", address, "",
      "Sign in to collect generations.", "", "URI: " + location.origin + "/collector",
      "Version: 1", "Chain ID: " + chainId, "Nonce: " + nonce,
      "Issued At: " + new Date().toISOString()].join("\n");
  }

  function render(root) {
    var status = document.getElementById("collector-status");
    var purchases = document.getElementById("collector-purchases");
    var generations = document.getElementById("collector-generations");
    api(root, "/collectors/me").then(function (me) {
      status.textContent = "Signed in as " + me.collector.wallet_address + ": " +
        me.generations_paid + " paid, " + me.generations_used + " collected, " +
        me.generations_pending + " pending.";
      document.getElementById("collector-sign-in").hidden = true;
      document.getElementById("collector-sign-out").hidden = false;
      return api(root, "/collectors/me/purchases");
    }).then(function (page) {
      purchases.replaceChildren();
      page.items.forEach(function (p) {
        purchases.appendChild(el("li", {}, p.transaction_hash.slice(0, 12) + "… " +
          p.payment_status + ": " + p.generations_used + " of " + p.generations_allowed +
          " used"));
      });
      return api(root, "/collectors/me/generations");
    }).then(function (page) {
      generations.replaceChildren();
      page.items.forEach(function (g) {
        var card = el("figure", {"class": "card"});
        var image = safeUrl(g.generated_image);
        var output = safeUrl(g.output_url);
        if (image) {
          card.appendChild(el("img", {src: image, alt: g.collection_title, loading: "lazy"}));
        } else if (output) {
          card.appendChild(el("a", {href: output, rel: "noopener", target: "_blank"}, "output"));
        } else if (g.output_data && g.output_data.steps && g.output_data.steps.length) {
          var last = g.output_data.steps[g.output_data.steps.length - 1].nodeResponse || {};
          card.appendChild(el("pre", {}, typeof last.data === "string" ? last.data : ""));
        }
        card.appendChild(el("figcaption", {}, g.collection_title + " · " + g.status));
        generations.appendChild(card);
      });
    }).catch(function (error) {
      status.textContent = sessionStorage.getItem(KEY) ? String(error.message) : "Not signed in.";
    });
  }

  function signIn(root) {
    var status = document.getElementById("collector-status");
    var wallet = window.ethereum;
    if (!wallet) { status.textContent = "No wallet found in this browser."; return; }
    var address, chainId;
    wallet.request({method: "eth_requestAccounts"}).then(function (accounts) {
      address = accounts[0];
      return wallet.request({method: "eth_chainId"});
    }).then(function (hexChain) {
      chainId = parseInt(hexChain, 16);
      return api(root, "/collectors/nonce");
    }).then(function (nonce) {
      var message = siweMessage(address, chainId, nonce.nonce);
      return wallet.request({method: "personal_sign", params: [message, address]})
        .then(function (signature) {
          return api(root, "/collectors/login", {method: "POST",
            headers: {"Content-Type": "application/json"},
            body: JSON.stringify({message: message, signature: signature})});
        });
    }).then(function (login) {
      sessionStorage.setItem(KEY, login.access);
      render(root);
    }).catch(function (error) { status.textContent = String(error.message || error); });
  }

  document.addEventListener("DOMContentLoaded", function () {
    var box = document.getElementById("collector");
    if (!box) { return; }
    var root = box.getAttribute("data-api");
    document.getElementById("collector-sign-in").addEventListener("click", function () {
      signIn(root);
    });
    document.getElementById("collector-sign-out").addEventListener("click", function () {
      sessionStorage.removeItem(KEY);
      location.reload();
    });
    if (sessionStorage.getItem(KEY)) { render(root); }
  });
}());
