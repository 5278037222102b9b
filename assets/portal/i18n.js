// Portal texts in English and Dutch. `t(key, vars)` fills {name} placeholders.
const TEXT = {
  en: {
    title: "cadbroker — CAD workstations",
    skip: "Skip to content",
    language: "Language",
    signIn: "Sign in",
    signOut: "Sign out",
    signedInAs: "Signed in as {user}",
    adminBadge: "admin",
    devTitle: "Development sign-in",
    devWarning: "Only for trying cadbroker: this broker has a development issuer, so anyone can sign in as anyone. It is not available when no development issuer is configured.",
    userName: "User name",
    groups: "Groups (comma separated)",
    asAdmin: "Sign in as broker admin",
    oidcTitle: "Organisation sign-in",
    noSignIn: "This broker offers no sign-in method for the portal.",
    pools: "Workstation pools",
    noPools: "No pools are open to you.",
    gpus: "{n} GPU(s) per workstation",
    availability: "{warm} ready now · {starting} starting · {free} free · {queued} waiting",
    request: "Request a workstation",
    mySessions: "My sessions",
    noSessions: "You have no sessions.",
    open: "Open desktop",
    end: "End session",
    keepWorking: "Keep working",
    queued: "Position {pos} in the queue",
    estimate: "about {time} to go",
    requested: "Requested {time}",
    readySince: "Ready since {time}",
    endedBecause: "Ended: {reason}",
    warningIdle: "This session has been idle and will end at {time} unless you keep working.",
    warningLifetime: "This session reaches its maximum lifetime and will end at {time}. Save your work.",
    warningOther: "This session will end at {time} ({reason}).",
    admin: "Administration",
    pool: "Pool",
    warm: "Warm",
    starting: "Starting",
    inUse: "In use",
    waiting: "Queued",
    capacity: "Capacity",
    min: "Minimum",
    max: "Maximum",
    warmBuffer: "Warm buffer",
    save: "Save capacity",
    saved: "Capacity of {pool} saved.",
    decisions: "Recent scaling decisions",
    noDecisions: "No decisions yet.",
    allSessions: "All sessions",
    user: "User",
    phase: "Phase",
    workstation: "Workstation",
    actions: "Actions",
    endFor: "End {id}",
    error: "Something went wrong: {message}",
    signInFailed: "Sign-in failed ({code}).",
    phases: { Queued: "Queued", Starting: "Starting", Ready: "Ready", Ending: "Ending", Ended: "Ended", Failed: "Failed" },
    reasons: {
      userended: "ended by you", idletimeout: "idle too long", maxlifetime: "maximum lifetime reached",
      adminended: "ended by an admin", podfailed: "the workstation failed", nodelost: "the workstation's node was lost",
      pooldeleted: "the pool was removed",
      userlimit: "you already hold as many workstations as allowed", notentitled: "you may not use this pool",
      idempotencyconflict: "the request repeated one made for another pool",
    },
  },
  nl: {
    title: "cadbroker — CAD-werkplekken",
    skip: "Naar de inhoud",
    language: "Taal",
    signIn: "Inloggen",
    signOut: "Uitloggen",
    signedInAs: "Ingelogd als {user}",
    adminBadge: "beheerder",
    devTitle: "Ontwikkel-login",
    devWarning: "Alleen om cadbroker uit te proberen: deze broker heeft een ontwikkel-uitgever, dus iedereen kan als iedereen inloggen. Zonder ontwikkel-uitgever bestaat deze login niet.",
    userName: "Gebruikersnaam",
    groups: "Groepen (komma-gescheiden)",
    asAdmin: "Inloggen als beheerder",
    oidcTitle: "Inloggen via je organisatie",
    noSignIn: "Deze broker biedt geen inlogmethode voor het portaal.",
    pools: "Werkplekpools",
    noPools: "Er zijn geen pools voor jou beschikbaar.",
    gpus: "{n} GPU('s) per werkplek",
    availability: "{warm} direct klaar · {starting} wordt gestart · {free} vrij · {queued} wachtend",
    request: "Werkplek aanvragen",
    mySessions: "Mijn sessies",
    noSessions: "Je hebt geen sessies.",
    open: "Bureaublad openen",
    end: "Sessie beëindigen",
    keepWorking: "Doorwerken",
    queued: "Plaats {pos} in de wachtrij",
    estimate: "nog ongeveer {time}",
    requested: "Aangevraagd {time}",
    readySince: "Klaar sinds {time}",
    endedBecause: "Beëindigd: {reason}",
    warningIdle: "Deze sessie is inactief en stopt om {time}, tenzij je doorwerkt.",
    warningLifetime: "Deze sessie bereikt haar maximale duur en stopt om {time}. Sla je werk op.",
    warningOther: "Deze sessie stopt om {time} ({reason}).",
    admin: "Beheer",
    pool: "Pool",
    warm: "Warm",
    starting: "Wordt gestart",
    inUse: "In gebruik",
    waiting: "Wachtrij",
    capacity: "Capaciteit",
    min: "Minimum",
    max: "Maximum",
    warmBuffer: "Warme buffer",
    save: "Capaciteit opslaan",
    saved: "Capaciteit van {pool} opgeslagen.",
    decisions: "Recente schaalbeslissingen",
    noDecisions: "Nog geen beslissingen.",
    allSessions: "Alle sessies",
    user: "Gebruiker",
    phase: "Fase",
    workstation: "Werkplek",
    actions: "Acties",
    endFor: "{id} beëindigen",
    error: "Er ging iets mis: {message}",
    signInFailed: "Inloggen mislukt ({code}).",
    phases: { Queued: "In de wachtrij", Starting: "Wordt gestart", Ready: "Klaar", Ending: "Wordt beëindigd", Ended: "Beëindigd", Failed: "Mislukt" },
    reasons: {
      userended: "door jou beëindigd", idletimeout: "te lang inactief", maxlifetime: "maximale duur bereikt",
      adminended: "door een beheerder beëindigd", podfailed: "de werkplek is uitgevallen", nodelost: "de server van de werkplek is weggevallen",
      pooldeleted: "de pool is verwijderd",
      userlimit: "je hebt al zoveel werkplekken als toegestaan", notentitled: "je mag deze pool niet gebruiken",
      idempotencyconflict: "het verzoek herhaalde er een voor een andere pool",
    },
  },
};

export const LANGUAGES = { en: "English", nl: "Nederlands" };

let current = "en";

export function setLanguage(lang) {
  current = TEXT[lang] ? lang : "en";
  document.documentElement.lang = current;
  for (const el of document.querySelectorAll("[data-i18n]")) {
    el.textContent = t(el.dataset.i18n);
  }
  document.title = t("title");
}

export function language() {
  return current;
}

export function t(key, vars = {}) {
  const value = key.split(".").reduce((o, k) => (o ? o[k] : undefined), TEXT[current]) ?? key;
  return String(value).replace(/\{(\w+)\}/g, (_, name) => String(vars[name] ?? ""));
}

export function phase(p) {
  return TEXT[current].phases[p] ?? p;
}

export function reason(r) {
  return TEXT[current].reasons[String(r).toLowerCase().replace(/[^a-z]/g, "")] ?? r;
}

export function clock(iso) {
  return new Date(iso).toLocaleTimeString(current === "nl" ? "nl-NL" : "en-GB", { hour: "2-digit", minute: "2-digit" });
}

export function duration(seconds) {
  // "s" and "min" read the same in both languages.
  const s = Math.max(0, Math.round(seconds));
  return s < 90 ? `${s} s` : `${Math.round(s / 60)} min`;
}
