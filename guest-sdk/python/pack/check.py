# check.py runs under the packing machine's python3 (pack.compile feeds it
# JSON on stdin): it compiles every .py file of a service to catch syntax
# errors, refuses module names that would hide the standard library, and,
# when this Python is 3.11 like the runtime, writes unchecked-hash bytecode.
import json
import py_compile
import sys

req = json.load(sys.stdin)
out = {"version": "%d.%d" % sys.version_info[:2], "pyc": sys.version_info[:2] == (3, 11),
       "syntax_error": None, "shadows": []}
stdlib = set(getattr(sys, "stdlib_module_names", ())) | {"nuropb", "_nuropb_host"}
out["shadows"] = sorted(m for m in req["modules"] if m in stdlib)
for f in req["files"]:
    with open(f["Disk"], "rb") as fh:
        src = fh.read()
    try:
        code = compile(src, f["Rel"], "exec", dont_inherit=True)
    except SyntaxError as e:
        out["syntax_error"] = {"File": f["Show"], "Line": e.lineno or 0, "Col": e.offset or 0,
                               "Msg": e.msg, "Text": (e.text or "").rstrip("\n")}
        break
    except ValueError as e:  # e.g. null bytes in the source
        out["syntax_error"] = {"File": f["Show"], "Line": 0, "Col": 0, "Msg": str(e), "Text": ""}
        break
    if out["pyc"]:
        py_compile.compile(f["Disk"], cfile=f["Pyc"], dfile=f["Rel"], doraise=True,
                           invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
json.dump(out, sys.stdout)
