"""nb2svc's code that runs inside the notebook's kernel.

The builder sends these modules (and ``in_fresh_python``, which knows what provides a module)
to the kernel once, as source text, when it starts (``install.py``); there they are the modules
of a private package, ``_nb2svc``, that the notebook's variables never see. Each later call is
one line, ``reply.reply(module, function, arguments)``.

They are never imported there as nb2svc: the kernel's environment may not have it installed. So
they may use only the standard library, IPython (which every Python kernel has), cloudpickle, and
the standard-library modules of the service's own runtime, imported from the service directory
being built (``runtime.py``); among themselves, relative imports only. Their functions return
JSON values.
"""
