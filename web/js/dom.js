// Builds DOM nodes. User text only ever becomes text nodes or property values, never markup.

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === 'class') el.className = value;
    else if (key === 'dataset') Object.assign(el.dataset, value);
    else if (key === 'style') for (const [prop, v] of Object.entries(value)) el.style.setProperty(prop, String(v));
    else if (key.startsWith('on')) el.addEventListener(key.slice(2), value);
    else if (key in el && typeof value !== 'string') el[key] = value;
    else el.setAttribute(key, value === true ? '' : String(value));
  }
  append(el, children);
  return el;
}

export function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

export function clear(el) {
  el.replaceChildren();
  return el;
}

export const $ = (selector, root = document) => root.querySelector(selector);

/// A short-lived notice at the bottom of the screen.
export function toast(text, kind = 'error') {
  const el = h('div', { class: `toast ${kind}`, role: 'status' }, text);
  $('#toasts').append(el);
  setTimeout(() => el.remove(), 5000);
}

/// A stable hue per id, so avatars keep their colour between sessions.
export function hue(id) {
  let n = 0;
  for (const c of id.slice(0, 8)) n = (n * 31 + c.charCodeAt(0)) % 360;
  return n;
}

export function initials(name) {
  const words = name.trim().split(/\s+/).filter(Boolean);
  const letters = words.length > 1 ? words.slice(0, 3).map((w) => [...w][0]) : [...(words[0] || '?')].slice(0, 2);
  return letters.join('');
}

export function formatTime(ms) {
  const d = new Date(ms);
  const now = new Date();
  const time = d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
  if (d.toDateString() === now.toDateString()) return `Today at ${time}`;
  return `${d.toLocaleDateString()} ${time}`;
}

/// Opens a dialog over the app; resolves when it closes. `build(close)` returns its body.
export function modal(title, build, { wide = false } = {}) {
  return new Promise((resolve) => {
    const root = $('#modal-root');
    const previous = document.activeElement;
    const close = (value) => {
      backdrop.remove();
      document.removeEventListener('keydown', onKey, true);
      previous?.focus?.();
      resolve(value);
    };
    const onKey = (e) => {
      if (e.key === 'Escape') {
        e.stopPropagation();
        close(null);
      }
    };
    const dialog = h('div', { class: `modal${wide ? ' wide' : ''}`, role: 'dialog', 'aria-modal': 'true', 'aria-label': title },
      h('header', {}, h('h2', {}, title), h('button', { class: 'icon close', 'aria-label': 'Close', onclick: () => close(null) }, '✕')),
      build(close));
    const backdrop = h('div', { class: 'backdrop', onmousedown: (e) => e.target === backdrop && close(null) }, dialog);
    root.append(backdrop);
    document.addEventListener('keydown', onKey, true);
    (dialog.querySelector('[autofocus]') || dialog.querySelector('input, textarea, select, button.primary'))?.focus();
  });
}

/// An in-app yes/no question (never `window.confirm`, which blocks the page).
export function confirmDialog(title, text, action = 'Confirm', danger = true) {
  return modal(title, (close) => h('div', { class: 'form' },
    h('p', {}, text),
    h('div', { class: 'actions' },
      h('button', { class: 'secondary', onclick: () => close(false) }, 'Cancel'),
      h('button', { class: danger ? 'danger' : 'primary', onclick: () => close(true) }, action))));
}

/// A small form in a dialog; resolves with the field values or null if cancelled.
export function formDialog(title, fields, action = 'Save') {
  return modal(title, (close) => {
    const inputs = {};
    const error = h('p', { class: 'form-error', role: 'alert' });
    const form = h('form', { class: 'form', onsubmit: (e) => {
      e.preventDefault();
      const values = Object.fromEntries(Object.entries(inputs).map(([k, el]) => [k, el.type === 'checkbox' ? el.checked : el.value]));
      close(values);
    } },
    fields.map((f) => {
      const el = f.options
        ? h('select', { name: f.name }, f.options.map(([v, label]) => h('option', { value: v, selected: v === f.value }, label)))
        : h('input', { name: f.name, type: f.type || 'text', value: f.value ?? '', placeholder: f.placeholder || '', required: f.required, maxlength: f.maxlength, autofocus: f === fields[0] });
      inputs[f.name] = el;
      return h('label', {}, h('span', {}, f.label), el);
    }),
    error,
    h('div', { class: 'actions' },
      h('button', { type: 'button', class: 'secondary', onclick: () => close(null) }, 'Cancel'),
      h('button', { type: 'submit', class: 'primary' }, action)));
    return form;
  });
}

/// Swaps `content` for an editor holding `text`. Enter (or "save") calls `save(newText, done)`,
/// where `done()` puts `content` back; Escape (or "cancel") puts it back and focuses the
/// `composer` selector. Returns the text box.
export function inlineEditor(content, text, save, composer) {
  const box = h('textarea', { class: 'edit-box', 'aria-label': 'Edit message', rows: 1, maxlength: 4000 });
  box.value = text;
  const done = () => form.replaceWith(content);
  const submit = () => save(box.value.trim(), done);
  box.addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && !e.shiftKey) {
      e.preventDefault();
      submit();
    } else if (e.key === 'Escape') {
      e.preventDefault();
      done();
      $(composer)?.focus();
    }
  });
  const form = h('div', { class: 'edit-form' }, box, h('div', { class: 'hint' }, 'escape to ', h('button', { class: 'link', onclick: done }, 'cancel'), ' • enter to ', h('button', { class: 'link', onclick: submit }, 'save')));
  content.replaceWith(form);
  box.focus();
  box.setSelectionRange(box.value.length, box.value.length);
  return box;
}

const EMOJI = ['👍', '❤️', '😂', '🎉', '😮', '😢', '🙏', '👀', '✅', '🔥'];

/// Opens the reaction picker on the message holding `anchor`; `pick(emoji)` runs on a choice.
/// A click elsewhere closes it.
export function openEmojiPicker(anchor, pick) {
  document.querySelector('.emoji-picker')?.remove();
  const picker = h('div', { class: 'emoji-picker', role: 'menu', 'aria-label': 'Pick a reaction' },
    EMOJI.map((e) => h('button', { class: 'emoji-choice', role: 'menuitem', 'aria-label': `React with ${e}`, onclick: () => {
      picker.remove();
      pick(e);
    } }, e)));
  anchor.closest('.message').append(picker);
  const close = (ev) => {
    if (!picker.contains(ev.target)) {
      picker.remove();
      document.removeEventListener('mousedown', close, true);
    }
  };
  document.addEventListener('mousedown', close, true);
}
