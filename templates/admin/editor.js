// The consent config editor (served as /admin/editor.js; the only script of the admin pages).
// The previews follow the form as it is edited: a moment after each change both frames load the
// preview of the draft with the form's values, which nothing saves. Without this script the
// previews show the saved draft, refreshed by each save.
(() => {
  const form = document.getElementById('config-form');
  const frames = document.querySelectorAll('iframe[data-preview]');
  if (!form || !frames.length) return;
  let timer;
  const update = () => {
    const q = new URLSearchParams(new FormData(form));
    q.delete('csrf');
    for (const f of frames) {
      q.set('view', f.dataset.preview);
      const url = `${f.dataset.base}?${q}`;
      // replace(): no history entry per keystroke.
      try { f.contentWindow.location.replace(url); } catch { f.src = url; }
    }
  };
  const later = () => { clearTimeout(timer); timer = setTimeout(update, 300); };
  form.addEventListener('input', later);
  form.addEventListener('change', later);
})();
