from celery import Celery

app = Celery("proj")

# Using a string here means the worker doesn't have to serialize the configuration object.
app.config_from_object("proj.celeryconfig")

# Load task modules from all registered packages.
app.autodiscover_tasks(["proj"])


@app.task(bind=True, ignore_result=True)
def debug_task(self):
    print(f"Request: {self.request!r}")
