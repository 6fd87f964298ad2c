/*
 * script_int.h — what the script*.c files share: the steps of a state's
 * life (created, loaded, activated, closed), the file watching the loader
 * drives, and the timers activation starts. Internal to those files; the
 * rest of the bindings see script.h only.
 */
#ifndef MQR_SCRIPT_INT_H
#define MQR_SCRIPT_INT_H

#include "script.h"

/* The registry's list of the files st's require loaded (the sandbox fills it). */
#define MODULES_KEY "mqrouter.modules"

/* script_lua.c: Lua states and the sandbox */
/* A new state with the rules API and its sandboxed environment (not yet
 * running anything); NULL and *errmsg (may be NULL) on failure. */
l_state_t *mqr__state_new(mqr_script_t *h, const char *chunkname, const char *path, char **errmsg);
/* Stops everything a state declared and frees it (the struct itself after
 * its timer handles have closed). NULL is a no-op. */
void mqr__state_close(l_state_t *st);
/* The directory of path ("." for none): malloc'd, NULL when out of memory. */
char *mqr__script_dir_of(const char *path);

/* script_load.c: files, require's modules, watching */
/* st->modules: the files st's require loaded (the sandbox's list). */
void mqr__script_collect_modules(l_state_t *st);
void mqr__script_watch_modules(mqr_script_t *h, const l_state_t *st);
void mqr__script_start_watch(mqr_script_t *h);
void mqr__script_stop_watch(mqr_script_t *h);
/* Loads h->path again (only_if_changed: unless neither it nor a module it
 * required changed). On failure the old rules keep running. */
int mqr__script_reload_file(mqr_script_t *h, bool only_if_changed, char **errmsg);
/* A reload failed: keep why (without the traceback) and when. */
void mqr__script_note_reload_failure(mqr_script_t *h, const char *err);

/* script.c: the transaction */
/* Loads code in a new state and, when it ran to its end, swaps it in for the
 * serving one. Any failure leaves the serving rules as they were. */
int mqr__script_load_code(mqr_script_t *h, const char *chunkname, const char *path,
                          const char *code, size_t len, char **errmsg);

/* script_route.c: timers */
/* Arms t on the loop, or on the fake clock. */
void mqr__timer_start(l_timer_t *t);
/* uv_close callback of a timer handle: frees it (and its closing state
 * after the last one). */
void mqr__timer_closed(uv_handle_t *h);

#endif
