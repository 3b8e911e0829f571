// The fixture's "jellyfin-web": after sign-in (fake-apiclient.js), it builds what the real client
// builds, in the layout <html data-layout> names:
// - legacy: the drawer as src/scripts/libraryMenu.js refreshLibraryInfoInDrawer() writes it (its
//   innerHTML replaced whole, the admin section for administrators only); window.__rebuildDrawer()
//   does it again, as every sign-in does;
// - modern: the MUI profile menu #app-user-menu (AppUserMenu.tsx), kept mounted at the end of body,
//   its admin links for administrators only; the profile button opens and closes it;
// - both: hash routing (#/home, #/details?id=…&serverId=…); the details page from
//   src/controllers/itemDetails/index.html, cached as viewManager does (up to three page elements
//   sharing id="itemDetailPage", the ones not shown with class "hide"), its buttons unhidden once the
//   item is loaded; legacy pages get a bubbling "viewshow", React ones nothing.
"use strict";

(function () {
  const layout = document.documentElement.dataset.layout;
  const MAX_CACHED_PAGES = 3;

  // --- legacy drawer (libraryMenu.js) ------------------------------------------------------------

  function refreshLibraryInfoInDrawer(user, views) {
    let html = "";
    html += '<div style="height:.5em;"></div>';
    html += '<a is="emby-linkbutton" class="navMenuOption lnkMediaFolder" href="#/home.html"><span class="material-icons navMenuOptionIcon home" aria-hidden="true"></span><span class="navMenuOptionText">Home</span></a>';
    html += '<div class="customMenuOptions"></div>';
    html += '<div class="libraryMenuOptions"></div>';
    if (user.Policy?.IsAdministrator) {
      html += '<div class="adminMenuOptions">';
      html += '<h3 class="sidebarHeader">Administration</h3>';
      html += '<a is="emby-linkbutton" class="navMenuOption lnkMediaFolder lnkManageServer" data-itemid="dashboard" href="#/dashboard"><span class="material-icons navMenuOptionIcon dashboard" aria-hidden="true"></span><span class="navMenuOptionText">Dashboard</span></a>';
      html += '<a is="emby-linkbutton" class="navMenuOption lnkMediaFolder editorViewMenu" data-itemid="editor" href="#/metadata"><span class="material-icons navMenuOptionIcon mode_edit" aria-hidden="true"></span><span class="navMenuOptionText">Metadata Manager</span></a>';
      html += "</div>";
    }
    html += '<div class="userMenuOptions">';
    html += '<h3 class="sidebarHeader">User</h3>';
    html += '<a is="emby-linkbutton" class="navMenuOption lnkMediaFolder btnSettings" data-itemid="settings" href="#"><span class="material-icons navMenuOptionIcon settings" aria-hidden="true"></span><span class="navMenuOptionText">Settings</span></a>';
    html += '<a is="emby-linkbutton" class="navMenuOption lnkMediaFolder btnLogout" data-itemid="logout" href="#"><span class="material-icons navMenuOptionIcon exit_to_app" aria-hidden="true"></span><span class="navMenuOptionText">Sign Out</span></a>';
    html += "</div>";
    document.querySelector(".mainDrawer .mainDrawer-scrollContainer").innerHTML = html;

    // updateLibraryMenu(): the user's views in .libraryMenuOptions, under a "Media" header.
    const libraries = document.querySelector(".mainDrawer .libraryMenuOptions");
    const header = document.createElement("h3");
    header.className = "sidebarHeader";
    header.textContent = "Media";
    libraries.append(header);
    for (const view of views) {
      const link = document.createElement("a");
      link.className = "navMenuOption lnkMediaFolder";
      link.dataset.itemid = view.id;
      link.href = `#/list?parentId=${view.id}`;
      const icon = document.createElement("span");
      icon.className = `material-icons navMenuOptionIcon ${view.icon}`;
      icon.setAttribute("aria-hidden", "true");
      const text = document.createElement("span");
      text.className = "sectionName navMenuOptionText";
      text.textContent = view.name;
      link.append(icon, text);
      libraries.append(link);
    }
  }

  const VIEWS = [
    { id: "movies", name: "Movies", icon: "movie" },
    { id: "shows", name: "Shows", icon: "tv" },
  ];

  // --- modern profile menu (AppUserMenu.tsx) ------------------------------------------------------

  let toggleMenu = () => {};

  function mountUserMenu(user) {
    const template = document.getElementById("appUserMenuTemplate");
    const menu = template.content.firstElementChild.cloneNode(true);
    if (!user.Policy?.IsAdministrator) menu.querySelectorAll("[data-admin]").forEach((node) => node.remove());
    menu.querySelectorAll("[data-admin]").forEach((node) => node.removeAttribute("data-admin"));
    const profile = menu.querySelector('[data-link="profile"]');
    profile.removeAttribute("data-link");
    profile.setAttribute("href", `#/userprofile?userId=${user.Id}`);
    document.body.append(menu); // MUI's Modal portal: the end of body

    const button = document.getElementById("app-user-menu-button");
    button.hidden = false;
    const setOpen = (open) => {
      menu.classList.toggle("MuiModal-hidden", !open);
      if (open) menu.removeAttribute("aria-hidden");
      else menu.setAttribute("aria-hidden", "true");
      button.setAttribute("aria-expanded", String(open));
      if (open) menu.querySelector('[role="menuitem"]')?.focus();
    };
    toggleMenu = () => setOpen(menu.classList.contains("MuiModal-hidden"));
    menu.querySelector(".MuiBackdrop-root").addEventListener("click", () => setOpen(false));
    menu.addEventListener("keydown", (event) => {
      if (event.key === "Escape") {
        setOpen(false);
        button.focus();
      }
    });
    // MenuItem onClick={onMenuClose}: following a link closes the menu.
    menu.addEventListener("click", (event) => {
      if (event.target instanceof Element && event.target.closest("a")) setOpen(false);
    });
  }

  // --- pages (viewManager) -------------------------------------------------------------------------

  const pages = document.querySelector(".mainAnimatedPages");

  function route() {
    const hash = location.hash || "#/home";
    const question = hash.indexOf("?");
    const path = (question === -1 ? hash : hash.slice(0, question)).slice(1);
    const params = new URLSearchParams(question === -1 ? "" : hash.slice(question + 1));
    return { path, params, url: hash };
  }

  function showPage(templateId, url) {
    let page = [...pages.children].find((element) => element.dataset.url === url);
    if (!page) {
      page = document.getElementById(templateId).content.firstElementChild.cloneNode(true);
      page.dataset.url = url;
      pages.prepend(page);
      while (pages.children.length > MAX_CACHED_PAGES) pages.lastElementChild.remove();
    }
    for (const other of pages.children) other.classList.toggle("hide", other !== page);
    return page;
  }

  async function renderDetails(page, itemId) {
    const item = await window.ApiClient.getItem(window.ApiClient.getCurrentUserId(), itemId);
    const name = document.createElement("h1");
    name.className = "itemName infoText parentNameLast";
    name.textContent = item.Name;
    page.querySelector(".nameContainer").replaceChildren(name);
    page.querySelector(".itemMiscInfo-primary").textContent = item.ProductionYear ? String(item.ProductionYear) : "";
    for (const selector of [".btnPlay", ".btnPlaystate", ".btnUserRating", ".btnMoreCommands"]) {
      page.querySelector(selector).classList.remove("hide");
    }
  }

  function navigate() {
    const { path, params, url } = route();
    const page = path === "/details" ? showPage("itemDetailsTemplate", url) : showPage("homeTemplate", url);
    if (path === "/details" && !page.dataset.rendered) {
      page.dataset.rendered = "1";
      renderDetails(page, params.get("id")).catch(() => page.querySelector(".nameContainer").replaceChildren());
    }
    if (layout === "legacy") page.dispatchEvent(new CustomEvent("viewshow", { bubbles: true }));
  }

  // --- start ------------------------------------------------------------------------------------

  function signedIn(user) {
    if (layout === "legacy") {
      refreshLibraryInfoInDrawer(user, VIEWS);
      window.__rebuildDrawer = () => refreshLibraryInfoInDrawer(user, VIEWS);
      document.querySelector(".headerUserButton").classList.remove("hide");
    } else {
      document.getElementById("app-user-menu")?.remove(); // React unmounts the old user's menu
      mountUserMenu(user);
    }
  }

  document.addEventListener("fixture-signedin", (event) => signedIn(event.detail));
  document.getElementById("app-user-menu-button")?.addEventListener("click", () => toggleMenu());

  window.__signedIn.then((user) => {
    if (!user) return; // the real client would show its sign-in page
    signedIn(user);
    window.addEventListener("hashchange", navigate);
    navigate();
    document.documentElement.classList.remove("preload");
    document.documentElement.dataset.ready = "1"; // for the tests: the app has rendered
  });
})();
