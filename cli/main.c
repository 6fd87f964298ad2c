/*
 * main.c — the `mqrouter` command: parse options, create the engine, load
 * the rules script (watched for changes), run until SIGINT/SIGTERM.
 *
 * Everything it does goes through the public API in mqrouter.h, as any C
 * host's would.
 */
#include "mqrouter.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *out)
{
    fputs("usage: mqrouter [options] rules.lua\n"
          "\n"
          "Runs the rules script on an engine with an embedded MQTT listener and a\n"
          "SQLite store. The script is reloaded when it changes or on SIGHUP.\n"
          "\n"
          "options:\n"
          "  --listen HOST:PORT   MQTT listener address (default 127.0.0.1:1883)\n"
          "  --no-listen          run without the embedded listener\n"
          "  --data-dir DIR       where the SQLite database lives (default ./data)\n"
          "  --log-level LEVEL    error, warn, info (default) or debug\n"
          "  --budget-ms MS       time budget of one handler call (default 1000)\n"
          "  --no-watch           do not reload when the script file changes\n"
          "  --check              load the script in a scratch engine, report, exit\n"
          "  --version            print the version and exit\n"
          "  --help               this text\n",
          out);
}

static int parse_listen(const char *spec, char **host, int *port)
{
    const char *colon = strrchr(spec, ':');
    if (!colon || colon == spec) return -1;
    char *end;
    long p = strtol(colon + 1, &end, 10);
    if (*end || p <= 0 || p > 65535) return -1;
    *host = strndup(spec, (size_t)(colon - spec));
    *port = (int)p;
    return *host ? 0 : -1;
}

int main(int argc, char **argv)
{
    enum {
        OPT_LISTEN = 256,
        OPT_NO_LISTEN,
        OPT_DATA,
        OPT_LOG,
        OPT_BUDGET,
        OPT_NO_WATCH,
        OPT_CHECK,
        OPT_VERSION,
        OPT_HELP
    };
    static const struct option longopts[] = {
        {"listen", required_argument, NULL, OPT_LISTEN},
        {"no-listen", no_argument, NULL, OPT_NO_LISTEN},
        {"data-dir", required_argument, NULL, OPT_DATA},
        {"log-level", required_argument, NULL, OPT_LOG},
        {"budget-ms", required_argument, NULL, OPT_BUDGET},
        {"no-watch", no_argument, NULL, OPT_NO_WATCH},
        {"check", no_argument, NULL, OPT_CHECK},
        {"version", no_argument, NULL, OPT_VERSION},
        {"help", no_argument, NULL, OPT_HELP},
        {NULL, 0, NULL, 0},
    };
    mqr_engine_options_t o;
    mqr_engine_options_init(&o);
    o.handle_signals = 1;
    o.watch_script = 1;
    char *host = NULL;
    int check = 0, c;
    while ((c = getopt_long(argc, argv, "hV", longopts, NULL)) != -1) {
        switch (c) {
        case OPT_LISTEN:
            if (parse_listen(optarg, &host, &o.listen_port) < 0) {
                fprintf(stderr, "mqrouter: --listen wants HOST:PORT, got '%s'\n", optarg);
                return 2;
            }
            o.listen_host = host;
            break;
        case OPT_NO_LISTEN:
            o.listen_port = -1;
            break;
        case OPT_DATA:
            o.data_dir = optarg;
            break;
        case OPT_LOG:
            o.log_level = mqr_log_level_parse(optarg);
            if (o.log_level < 0) {
                fprintf(stderr, "mqrouter: --log-level wants error, warn, info or debug\n");
                return 2;
            }
            break;
        case OPT_BUDGET:
            o.handler_budget_ms = (unsigned)strtoul(optarg, NULL, 10);
            break;
        case OPT_NO_WATCH:
            o.watch_script = 0;
            break;
        case OPT_CHECK:
            check = 1;
            break;
        case 'V':
        case OPT_VERSION:
            printf("mqrouter %s\n", mqr_version());
            return 0;
        case 'h':
        case OPT_HELP:
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind != argc - 1) {
        usage(stderr);
        return 2;
    }
    const char *script = argv[optind];

    if (check) {
        /* a scratch engine: no listener, in-memory store, nothing persists */
        o.listen_port = -1;
        o.data_dir = "";
        o.handle_signals = 0;
        o.watch_script = 0;
        if (o.log_level > MQR_LOG_WARN) o.log_level = MQR_LOG_WARN;
    }
    mqr_engine_t *e;
    char *err = NULL;
    int rc = mqr_engine_new(&e, &o, NULL, &err);
    if (rc < 0) {
        fprintf(stderr, "mqrouter: %s\n", err ? err : mqr_strerror(rc));
        free(err);
        free(host);
        return 1;
    }
    rc = mqr_engine_load_file(e, script, &err);
    if (rc < 0) {
        fprintf(stderr, "mqrouter: %s: %s\n", mqr_err_name(rc), err ? err : mqr_strerror(rc));
        free(err);
        mqr_engine_free(e);
        free(host);
        return 1;
    }
    if (check) {
        printf("%s: OK\n", script);
        mqr_engine_free(e);
        free(host);
        return 0;
    }
    rc = mqr_engine_run(e);
    mqr_engine_free(e);
    free(host);
    return rc == 0 ? 0 : 1;
}
