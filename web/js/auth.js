// The sign-up and log-in screen.

import { h, $, clear } from './dom.js';

const MESSAGES = {
  invalid_username: 'Usernames are 2–32 characters: a–z, 0–9, _ . and -.',
  invalid_password: 'Passwords are 8 to 256 characters.',
  username_taken: 'That username is taken.',
  invalid_credentials: 'Wrong username or password.',
  rate_limited: 'Too many attempts; wait a moment.',
};

export function showAuth(api, onAuthed, { inviting = false } = {}) {
  let mode = 'login';
  const root = clear($('#root'));
  const error = h('p', { class: 'form-error', role: 'alert' });
  const username = h('input', { name: 'username', autocomplete: 'username', required: true, autofocus: true, autocapitalize: 'none', spellcheck: 'false' });
  const password = h('input', { name: 'password', type: 'password', autocomplete: 'current-password', required: true });
  const title = h('h1');
  const subtitle = h('p', { class: 'muted' });
  const submit = h('button', { type: 'submit', class: 'primary wide' });
  const switcher = h('button', { type: 'button', class: 'link', onclick: () => setMode(mode === 'login' ? 'register' : 'login') });
  const hint = h('span', { class: 'muted' });

  function setMode(next) {
    mode = next;
    title.textContent = mode === 'login' ? 'Welcome back!' : 'Create an account';
    subtitle.textContent = inviting
      ? 'Log in or sign up to accept your invite.'
      : mode === 'login' ? 'Log in to your community’s node.' : 'Your account lives on this node.';
    submit.textContent = mode === 'login' ? 'Log In' : 'Sign Up';
    hint.textContent = mode === 'login' ? 'Need an account? ' : 'Already have an account? ';
    switcher.textContent = mode === 'login' ? 'Register' : 'Log In';
    password.autocomplete = mode === 'login' ? 'current-password' : 'new-password';
    error.textContent = '';
  }

  const form = h('form', { class: 'auth-card', onsubmit: async (e) => {
    e.preventDefault();
    error.textContent = '';
    submit.disabled = true;
    try {
      const name = username.value.trim().toLowerCase();
      const result = mode === 'login' ? await api.login(name, password.value) : await api.register(name, password.value);
      onAuthed(result);
    } catch (err) {
      error.textContent = MESSAGES[err.code] || err.message;
    } finally {
      submit.disabled = false;
    }
  } },
  h('div', { class: 'brand' }, 'Guildhall'),
  title, subtitle,
  h('label', {}, h('span', {}, 'Username'), username),
  h('label', {}, h('span', {}, 'Password'), password),
  error, submit,
  h('p', { class: 'switch' }, hint, switcher));
  setMode('login');
  root.append(h('div', { class: 'auth-screen' }, form));
  username.focus();
}
