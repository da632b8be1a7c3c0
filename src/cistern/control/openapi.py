"""The OpenAPI 3.0 description of the admin API (served at ``/api/openapi.json``).

Written by hand next to the routes of :mod:`cistern.control.http`; ``tests/integration/test_admin_api.py``
runs schemathesis against it.
"""

from __future__ import annotations

from typing import Any

_ERROR = {"$ref": "#/components/schemas/Error"}
_REPORT = {"$ref": "#/components/schemas/ApplyReport"}


def _json(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*codes: int) -> dict[str, Any]:
    names = {
        400: "Invalid request: the error names the object and the cause",
        401: "Missing or wrong bearer token (TCP listener)",
        403: "Changes are refused on the TCP listener without a token",
        404: "No such object",
        409: "Conflicts with the running state, or cannot be applied (nothing was applied)",
        413: "Request body too large",
        500: "The server could not do it (named in the body)",
    }
    return {str(code): _json(_ERROR, names[code]) for code in codes}


def _body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


_TARGET_P = {
    "name": "target",
    "in": "path",
    "required": True,
    "schema": {"type": "string"},
    "description": "IQN",
}
_LUN_P = {
    "name": "lun",
    "in": "path",
    "required": True,
    "schema": {"type": "integer", "minimum": 0, "maximum": 16383},
}
_TSIH_P = {
    "name": "tsih",
    "in": "path",
    "required": True,
    "schema": {"type": "integer", "minimum": 1, "maximum": 65535},
}
_TAG_P = {
    "name": "tag",
    "in": "path",
    "required": True,
    "schema": {"type": "integer", "minimum": 1, "maximum": 65535},
}
_END_P = {"name": "end_sessions", "in": "query", "required": False, "schema": {"type": "boolean"}}
_CHANGE_ERRORS = _errors(400, 401, 403, 404, 409, 413)


def openapi_document(version: str) -> dict[str, Any]:
    """The OpenAPI 3.0.3 document of the admin API."""
    paths: dict[str, Any] = {
        "/api/_ping": {"get": {"summary": "Liveness", "responses": {"200": _json({"type": "object"})}}},
        "/api/sysinfo": {
            "get": {
                "summary": "Version, PID, uptime, counts",
                "responses": {"200": _json({"type": "object"})},
            }
        },
        "/api/config": {
            "get": {
                "summary": "The running config (JSON; ?format=toml for the TOML dump). Holds CHAP secrets: token on TCP.",
                "parameters": [
                    {
                        "name": "format",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "string", "enum": ["json", "toml"]},
                    }
                ],
                "responses": {"200": _json({"type": "object"}), **_errors(401, 403)},
            }
        },
        "/api/config/save": {
            "post": {
                "summary": "Write the running config to the served file (atomic, rotated backups)",
                "responses": {"200": _json({"type": "object"}), **_errors(401, 403, 409, 500)},
            }
        },
        "/api/config/diff": {
            "post": {
                "summary": "What applying a config would change",
                "requestBody": _body({"$ref": "#/components/schemas/ConfigText"}),
                "responses": {"200": _json({"type": "object"}), **_CHANGE_ERRORS},
            }
        },
        "/api/config/apply": {
            "post": {
                "summary": "Apply a config live; one bad object applies nothing",
                "requestBody": _body({"$ref": "#/components/schemas/ConfigText"}),
                "responses": {"200": _json(_REPORT), **_CHANGE_ERRORS},
            }
        },
        "/api/config/reload": {
            "post": {
                "summary": "Re-read the served config file and apply it (as SIGHUP does)",
                "responses": {"200": _json(_REPORT), **_CHANGE_ERRORS},
            }
        },
        "/api/targets": {
            "get": {
                "summary": "Targets with portal groups, LUNs, sessions",
                "responses": {"200": _json({"type": "object"})},
            },
            "post": {
                "summary": "Add a target (a [[targets]] table as JSON)",
                "requestBody": _body({"type": "object"}),
                "responses": {"201": _json(_REPORT), **_CHANGE_ERRORS},
            },
        },
        "/api/targets/{target}": {
            "parameters": [_TARGET_P],
            "get": {"summary": "One target", "responses": {"200": _json({"type": "object"}), **_errors(404)}},
            "delete": {
                "summary": "Remove a target (its sessions are logged out)",
                "responses": {"200": _json(_REPORT), **_CHANGE_ERRORS},
            },
        },
        "/api/targets/{target}/luns": {
            "parameters": [_TARGET_P],
            "post": {
                "summary": "Add a LUN (a [[targets.luns]] table as JSON); initiators get REPORTED LUNS DATA HAS CHANGED",
                "requestBody": _body({"type": "object"}),
                "responses": {"201": _json(_REPORT), **_CHANGE_ERRORS},
            },
        },
        "/api/targets/{target}/luns/{lun}": {
            "parameters": [_TARGET_P, _LUN_P],
            "delete": {
                "summary": "Remove a LUN: in-flight commands finish, then its store closes",
                "responses": {"200": _json(_REPORT), **_CHANGE_ERRORS},
            },
        },
        "/api/targets/{target}/luns/{lun}/resize": {
            "parameters": [_TARGET_P, _LUN_P],
            "post": {
                "summary": "Grow a file or memory LUN (or raise a block LUN's size cap); initiators get "
                "CAPACITY DATA HAS CHANGED; shrinking is refused",
                "requestBody": _body(
                    {
                        "type": "object",
                        "required": ["size"],
                        "properties": {"size": {"oneOf": [{"type": "integer"}, {"type": "string"}]}},
                    }
                ),
                "responses": {"200": _json(_REPORT), **_CHANGE_ERRORS},
            },
        },
        "/api/targets/{target}/luns/{lun}/rescan": {
            "parameters": [_TARGET_P, _LUN_P],
            "post": {
                "summary": "Re-read the size of a block (or file) LUN whose device grew; initiators get "
                "CAPACITY DATA HAS CHANGED",
                "responses": {"200": _json(_REPORT), **_CHANGE_ERRORS},
            },
        },
        "/api/targets/{target}/acl": {
            "parameters": [_TARGET_P],
            "post": {
                "summary": "Allow an initiator (new logins)",
                "requestBody": _body(
                    {
                        "type": "object",
                        "required": ["initiator"],
                        "properties": {"initiator": {"type": "string"}},
                    }
                ),
                "responses": {"201": _json(_REPORT), **_CHANGE_ERRORS},
            },
        },
        "/api/targets/{target}/acl/{initiator}": {
            "parameters": [
                _TARGET_P,
                {"name": "initiator", "in": "path", "required": True, "schema": {"type": "string"}},
            ],
            "delete": {
                "summary": "Disallow an initiator (its sessions stay unless end_sessions=true)",
                "parameters": [_END_P],
                "responses": {"200": _json(_REPORT), **_CHANGE_ERRORS},
            },
        },
        "/api/targets/{target}/auth": {
            "parameters": [_TARGET_P],
            "put": {
                "summary": "Set (or with null clear) the target's CHAP credentials (new logins)",
                "parameters": [_END_P],
                "requestBody": _body(
                    {"type": "object", "properties": {"auth": {"type": "object", "nullable": True}}}
                ),
                "responses": {"200": _json(_REPORT), **_CHANGE_ERRORS},
            },
        },
        "/api/targets/{target}/portal_groups/{tag}/alua": {
            "parameters": [
                _TARGET_P,
                {
                    "name": "tag",
                    "in": "path",
                    "required": True,
                    "schema": {"type": "integer", "minimum": 1, "maximum": 65535},
                },
            ],
            "put": {
                "summary": "Change a portal group's ALUA state (implicit transition)",
                "requestBody": _body(
                    {"type": "object", "required": ["state"], "properties": {"state": {"type": "string"}}}
                ),
                "responses": {"200": _json(_REPORT), **_CHANGE_ERRORS},
            },
        },
        "/api/targets/{target}/portal_groups/{tag}/portals": {
            "parameters": [_TARGET_P, _TAG_P],
            "post": {
                "summary": "Serve the target on one more portal (the listener opens now)",
                "requestBody": _body(
                    {"type": "object", "required": ["portal"], "properties": {"portal": {"type": "string"}}}
                ),
                "responses": {"201": _json(_REPORT), **_CHANGE_ERRORS},
            },
        },
        "/api/targets/{target}/portal_groups/{tag}/portals/{portal}": {
            "parameters": [
                _TARGET_P,
                _TAG_P,
                {"name": "portal", "in": "path", "required": True, "schema": {"type": "string"}},
            ],
            "delete": {
                "summary": "Stop serving the target on a portal (open connections stay)",
                "responses": {"200": _json(_REPORT), **_CHANGE_ERRORS},
            },
        },
        "/api/sessions": {
            "get": {
                "summary": "Sessions with their keys and counters",
                "responses": {"200": _json({"type": "object"})},
            }
        },
        "/api/sessions/{tsih}": {
            "parameters": [_TSIH_P],
            "get": {
                "summary": "One session",
                "responses": {"200": _json({"type": "object"}), **_errors(404)},
            },
            "delete": {
                "summary": "End a session (Async Message logout request, then the connections close)",
                "responses": {"200": _json({"type": "object"}), **_errors(401, 403, 404)},
            },
        },
        "/api/stats": {
            "get": {"summary": "Counters for the dashboard", "responses": {"200": _json({"type": "object"})}}
        },
        "/api/events": {
            "get": {
                "summary": "Recent events (logins, refusals, changes)",
                "parameters": [
                    {
                        "name": "since",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "integer", "minimum": 0},
                    }
                ],
                "responses": {"200": _json({"type": "object"}), **_errors(400)},
            }
        },
    }
    return {
        "openapi": "3.0.3",
        "info": {"title": "cistern admin API", "version": version},
        "paths": paths,
        "components": {
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {
                        "error": {
                            "type": "object",
                            "required": ["object", "cause", "issues"],
                            "properties": {
                                "object": {"type": "string"},
                                "cause": {"type": "string"},
                                "issues": {"type": "array", "items": {"type": "string"}},
                            },
                        }
                    },
                },
                "Change": {
                    "type": "object",
                    "properties": {
                        "action": {"type": "string"},
                        "object": {"type": "string"},
                        "detail": {"type": "string"},
                    },
                },
                "ApplyReport": {
                    "type": "object",
                    "required": ["applied", "restart_required"],
                    "properties": {
                        "applied": {"type": "array", "items": {"$ref": "#/components/schemas/Change"}},
                        "restart_required": {
                            "type": "array",
                            "items": {"$ref": "#/components/schemas/Change"},
                        },
                    },
                },
                "ConfigText": {
                    "type": "object",
                    "required": ["toml"],
                    "properties": {"toml": {"type": "string"}, "end_sessions": {"type": "boolean"}},
                },
            }
        },
    }
