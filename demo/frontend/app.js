// Shows the pod's aggregate health, as a real frontend would before opening the IDE.
fetch("/health")
  .then((answer) => answer.json())
  .then((health) => { document.getElementById("status").textContent = health.status; })
  .catch(() => { document.getElementById("status").textContent = "unreachable"; });
