"""The control plane's core: the job store (:mod:`service.core.store`), the scheduler that
owns the queue, admission, quotas and every state transition (:mod:`service.core.scheduler`),
settings, principals and resources. It drives jobs through a backend
(:mod:`service.backends`) and knows nothing of HTTP."""
