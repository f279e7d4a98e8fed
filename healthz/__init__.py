"""How the pod's health is known and told: probes, the HTTP app, metrics, the control socket,
podctl. Nothing here imports the engine; the engine is handed in behind `healthz.model.Pod`."""
