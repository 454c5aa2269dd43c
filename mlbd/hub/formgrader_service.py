"""The formgrader service's server (``python -m mlbd.hub.formgrader_service``): jupyterhub-singleuser
run by the course account, where instructors get the whole server and TAs only the grading pages.

The hub lets both groups reach the service (``access:services!service=formgrader``). The server
runs as the course account, which owns the gradebook, ``source/`` and every submission: a kernel,
a terminal or a contents-API write there is code or files as that account. Instructors hold the
custom scope ``custom:formgrader:full`` (hub_config/jupyterhub_config.py) and keep all of it. Anyone
else is let through to nbgrader's formgrader pages and read-only API, and may write only manual
scores, comments and review flags; everything else (kernels, terminals, contents, nbconvert, the
formgrader's assign/release/collect/autograde/feedback buttons, student edits, validation) is
refused with 403.

The check sits in the identity provider, the one step every Jupyter handler runs (``prepare``):
nbgrader's handlers are guarded by ``@web.authenticated`` only and never ask an Authorizer.
"""
from __future__ import annotations

from jupyterhub.singleuser.extension import JupyterHubIdentityProvider, JupyterHubSingleUser
from nbgrader.server_extensions.formgrader import apihandlers
from nbgrader.server_extensions.formgrader.base import BaseHandler as FormgraderHandler
from tornado.web import HTTPError
from traitlets.config import Config

FULL_ACCESS_SCOPE = "custom:formgrader:full"
READ_METHODS = {"GET", "HEAD"}
GRADING_WRITES = {
    (apihandlers.GradeHandler, "PUT"),            # manual score, extra credit
    (apihandlers.CommentHandler, "PUT"),          # comment
    (apihandlers.FlagSubmissionHandler, "POST"),  # flag for review
}


def grading_only_allows(handler) -> bool:
    """What a TA may do: formgrader pages and reads, and the three grading writes."""
    if not isinstance(handler, FormgraderHandler):
        return False
    method = handler.request.method
    return method in READ_METHODS or (type(handler), method) in GRADING_WRITES


class CourseIdentityProvider(JupyterHubIdentityProvider):
    async def get_user(self, handler):
        user = await super().get_user(handler)
        if user is None or FULL_ACCESS_SCOPE in user.hub_user.get("scopes", ()):
            return user
        if grading_only_allows(handler):
            return user
        self.log.warning("refused %s %s %s: grading access only", user.username, handler.request.method,
                         handler.request.path)

        def refuse(*args, **kwargs):
            raise HTTPError(403, f"{user.username} may grade here, but not use {handler.request.path}")

        handler._jupyterhub_user = None  # not the cached user on a second look
        handler.redirect = refuse        # @web.authenticated redirects anonymous GETs: refuse instead
        return None


class FormgraderServer(JupyterHubSingleUser):
    @classmethod
    def get_extension_package(cls):
        return __name__  # this module, not the top package `mlbd`, is the server extension

    def load_config_file(self):
        super().load_config_file()  # sets JupyterHubIdentityProvider above every config file
        self.serverapp.update_config(Config({"ServerApp": {
            "identity_provider_class": CourseIdentityProvider,
            "allow_unauthenticated_access": False,  # every handler needs a user, not only decorated ones
        }}))


def _jupyter_server_extension_points():
    return [{"module": __name__, "app": FormgraderServer}]


main = FormgraderServer.launch_instance

if __name__ == "__main__":  # the extension must be this module under its own name, not __main__
    from mlbd.hub.formgrader_service import main as run

    run()
