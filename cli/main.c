/*
 * main.c — the `mqrouter` command: parse options, create the engine, load
 * the rules script (watched for changes), run until SIGINT/SIGTERM.
 *
 * Everything it does goes through the public API in mqrouter.h, as any C
 * host's would.
 */
#include "mqrouter.h"
#include "mqrouter_auth.h"

#include <getopt.h>
#include <stdbool.h>
#include <stddef.h>
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
          "  --listen HOST:PORT   an MQTT (TCP) listener; repeatable (default\n"
          "                       127.0.0.1:1883 when no --listen* option is given)\n"
          "  --listen-tls HOST:PORT  an MQTT over TLS listener; repeatable; needs\n"
          "                       --cert and --key\n"
          "  --listen-ws HOST:PORT   an MQTT over WebSocket listener (subprotocol mqtt)\n"
          "  --listen-wss HOST:PORT  MQTT over WebSocket over TLS; needs --cert, --key\n"
          "  --cert FILE          PEM server certificate (chain) for TLS listeners\n"
          "  --key FILE           PEM private key of --cert\n"
          "  --cafile FILE        verify client certificates against these CAs\n"
          "  --require-cert       refuse TLS clients without a valid certificate\n"
          "  --limit KEY=VALUE    a limit of every --listen* listener; repeatable;\n"
          "                       keys: see docs/listener.md (max_connections,\n"
          "                       max_packet_size, max_qos, publish_rate, ...)\n"
          "  --no-listen          no listener but those the rules script declares\n"
          "  --data-dir DIR       where the SQLite database lives (default ./data)\n"
          "  --upstream-transport NAME  the client of upstream sessions that name\n"
          "                       none: native or paho (docs/upstream.md; default\n"
          "                       $MQROUTER_UPSTREAM_TRANSPORT, else built in)\n"
          "  --no-topic-counts    the topic registry does not count publishes (the\n"
          "                       admin API's topic list stays empty; ~5 % faster)\n"
          "  --admin HOST:PORT    serve the admin HTTP API, /health and /metrics\n"
          "                       (docs/admin.md); PORT alone means 127.0.0.1:PORT\n"
          "  --admin-tokens FILE  its bearer tokens, one per line, \"TOKEN\" or\n"
          "                       \"TOKEN tenant=NAME\" (a tenant's token sees only its\n"
          "                       devices and topics); required unless HOST is loopback\n"
          "  --admin-require-token  refuse to start the admin API without tokens, on\n"
          "                       loopback too (docs/security.md)\n"
          "  --admin-host NAME    a Host name the admin API answers to besides its\n"
          "                       address and localhost (a proxy's name); repeatable\n"
          "  --admin-origin URL   a web origin (scheme://host[:port]) whose pages may\n"
          "                       call the admin API (CORS); repeatable\n"
          "  --allow-anonymous    let clients without credentials in on every\n"
          "                       --listen* listener (default: on loopback only)\n"
          "  --add-user NAME      add a listener user (or set its password) with the\n"
          "                       password read from stdin (first line), then exit\n"
          "  --tenant TENANT      with --add-user: the user's tenant (its clients'\n"
          "                       topics go under TENANT/, docs/registry.md)\n"
          "  --del-user NAME      remove a listener user, then exit\n"
          "  --list-users         print the listener users, then exit\n"
          "  --log-level LEVEL    error, warn, info (default) or debug\n"
          "  --budget-ms MS       time budget of one handler call (default 1000)\n"
          "  --no-watch           do not reload when the script file changes\n"
          "  --check              load the script in a scratch engine, report, exit\n"
          "  --version            print the version and exit\n"
          "  --help               this text\n",
          out);
}

/* --limit KEY=VALUE: the numeric fields of mqr_listen_options_t by name. */
#define LIMIT_FIELD(name, type, sign)                                                              \
    {                                                                                              \
#name, offsetof(mqr_listen_options_t, name), sizeof(type), sign                            \
    }
static const struct {
    const char *name;
    size_t offset, size;
    bool is_signed;
} limit_fields[] = {
    LIMIT_FIELD(max_packet_size, size_t, false),
    LIMIT_FIELD(max_connections, unsigned, false),
    LIMIT_FIELD(max_inflight, unsigned, false),
    LIMIT_FIELD(max_queued, unsigned, false),
    LIMIT_FIELD(max_out_bytes, size_t, false),
    LIMIT_FIELD(receive_max, unsigned, false),
    LIMIT_FIELD(topic_alias_max, int, true),
    LIMIT_FIELD(max_subscriptions, unsigned, false),
    LIMIT_FIELD(connect_timeout_ms, unsigned, false),
    LIMIT_FIELD(max_keepalive, unsigned, false),
    LIMIT_FIELD(max_qos, int, true),
    LIMIT_FIELD(publish_rate, unsigned, false),
    LIMIT_FIELD(publish_burst, unsigned, false),
    LIMIT_FIELD(connect_rate, unsigned, false),
    LIMIT_FIELD(connect_burst, unsigned, false),
    LIMIT_FIELD(stuck_timeout_ms, unsigned, false),
    LIMIT_FIELD(sys_interval_ms, int, true),
    LIMIT_FIELD(v311_session_expiry_s, unsigned, false),
};
#define N_LIMIT_FIELDS (sizeof limit_fields / sizeof limit_fields[0])

typedef struct {
    unsigned field;
    long long value;
} cli_limit_t;

static int parse_limit(const char *spec, cli_limit_t *out)
{
    const char *eq = strchr(spec, '=');
    if (!eq) return -1;
    for (unsigned i = 0; i < N_LIMIT_FIELDS; i++) {
        if (strlen(limit_fields[i].name) != (size_t)(eq - spec) ||
            strncmp(limit_fields[i].name, spec, (size_t)(eq - spec)) != 0)
            continue;
        char *end;
        long long v = strtoll(eq + 1, &end, 10);
        if (!eq[1] || *end || (!limit_fields[i].is_signed && v < 0) || v > 0x7fffffffll ||
            v < -0x7fffffffll)
            return -1;
        out->field = i;
        out->value = v;
        return 0;
    }
    return -1;
}

static void apply_limit(mqr_listen_options_t *lo, const cli_limit_t *l)
{
    char *p = (char *)lo + limit_fields[l->field].offset;
    if (limit_fields[l->field].size == sizeof(size_t)) {
        size_t v = (size_t)l->value;
        memcpy(p, &v, sizeof v);
    } else {
        int v = (int)l->value; /* int and unsigned share size and layout here */
        memcpy(p, &v, sizeof v);
    }
}

static int parse_listen(const char *spec, char **host, int *port)
{
    const char *colon = strrchr(spec, ':');
    if (!colon || colon == spec) return -1;
    char *end;
    long p = strtol(colon + 1, &end, 10);
    if (*end || p < 0 || p > 65535) return -1;
    const char *h = spec;
    size_t hl = (size_t)(colon - spec);
    if (hl >= 2 && h[0] == '[' && h[hl - 1] == ']') { /* [::1]:1883 */
        h++;
        hl -= 2;
    }
    *host = strndup(h, hl);
    *port = (int)p;
    return *host ? 0 : -1;
}

/* The --listen* options, started once the engine exists. */
typedef struct {
    int type;
    char *host;
    int port;
} cli_listen_t;

static void free_listens(cli_listen_t *l, int n)
{
    for (int i = 0; i < n; i++)
        free(l[i].host);
}

static int print_user(void *arg, const char *name)
{
    (void)arg;
    printf("%s\n", name);
    return 0;
}

/* --add-user, --del-user, --list-users: an engine on the store only. */
static int users_main(mqr_engine_options_t *o, const char *add, const char *tenant, const char *del,
                      int list)
{
    o->listen_port = -1;
    o->handle_signals = 0;
    o->watch_script = 0;
    if (o->log_level > MQR_LOG_WARN) o->log_level = MQR_LOG_WARN;
    char pw[1024];
    if (add) {
        if (!fgets(pw, sizeof pw, stdin)) {
            fprintf(stderr, "mqrouter: --add-user reads the password from stdin: got nothing\n");
            return 2;
        }
        size_t n = strcspn(pw, "\r\n");
        if (pw[n] == '\0' && n == sizeof pw - 1) {
            fprintf(stderr, "mqrouter: password too long (at most %zu bytes)\n", sizeof pw - 2);
            return 2;
        }
        pw[n] = '\0';
    }
    mqr_engine_t *e;
    char *err = NULL;
    int rc = mqr_engine_new(&e, o, NULL, &err);
    if (rc < 0) {
        fprintf(stderr, "mqrouter: %s\n", err ? err : mqr_strerror(rc));
        free(err);
        return 1;
    }
    if (add) {
        rc = mqr_user_add(e, add, pw, 0);
        memset(pw, 0, sizeof pw);
        if (rc < 0) fprintf(stderr, "mqrouter: --add-user %s: %s\n", add, mqr_strerror(rc));
        if (rc == 0 && tenant) {
            rc = mqr_user_set_tenant(e, add, tenant);
            if (rc < 0) fprintf(stderr, "mqrouter: --tenant %s: %s\n", tenant, mqr_strerror(rc));
        }
    }
    if (rc == 0 && del) {
        rc = mqr_user_remove(e, del);
        if (rc < 0) fprintf(stderr, "mqrouter: --del-user %s: %s\n", del, mqr_strerror(rc));
    }
    if (rc == 0 && list) rc = mqr_user_list(e, print_user, NULL);
    mqr_engine_free(e);
    return rc < 0 ? 1 : 0;
}

int main(int argc, char **argv)
{
    enum {
        OPT_LISTEN = 256,
        OPT_LISTEN_TLS,
        OPT_LISTEN_WS,
        OPT_LISTEN_WSS,
        OPT_CERT,
        OPT_KEY,
        OPT_CAFILE,
        OPT_REQUIRE_CERT,
        OPT_LIMIT,
        OPT_NO_LISTEN,
        OPT_ADMIN,
        OPT_ADMIN_TOKENS,
        OPT_ADMIN_HOST,
        OPT_ADMIN_ORIGIN,
        OPT_ADMIN_REQUIRE_TOKEN,
        OPT_DATA,
        OPT_LOG,
        OPT_BUDGET,
        OPT_NO_WATCH,
        OPT_CHECK,
        OPT_ALLOW_ANON,
        OPT_ADD_USER,
        OPT_DEL_USER,
        OPT_LIST_USERS,
        OPT_TENANT,
        OPT_UPSTREAM_TRANSPORT,
        OPT_NO_TOPIC_COUNTS,
        OPT_VERSION,
        OPT_HELP
    };
    static const struct option longopts[] = {
        {"listen", required_argument, NULL, OPT_LISTEN},
        {"listen-tls", required_argument, NULL, OPT_LISTEN_TLS},
        {"listen-ws", required_argument, NULL, OPT_LISTEN_WS},
        {"listen-wss", required_argument, NULL, OPT_LISTEN_WSS},
        {"cert", required_argument, NULL, OPT_CERT},
        {"key", required_argument, NULL, OPT_KEY},
        {"cafile", required_argument, NULL, OPT_CAFILE},
        {"require-cert", no_argument, NULL, OPT_REQUIRE_CERT},
        {"limit", required_argument, NULL, OPT_LIMIT},
        {"no-listen", no_argument, NULL, OPT_NO_LISTEN},
        {"admin", required_argument, NULL, OPT_ADMIN},
        {"admin-tokens", required_argument, NULL, OPT_ADMIN_TOKENS},
        {"admin-host", required_argument, NULL, OPT_ADMIN_HOST},
        {"admin-origin", required_argument, NULL, OPT_ADMIN_ORIGIN},
        {"admin-require-token", no_argument, NULL, OPT_ADMIN_REQUIRE_TOKEN},
        {"data-dir", required_argument, NULL, OPT_DATA},
        {"upstream-transport", required_argument, NULL, OPT_UPSTREAM_TRANSPORT},
        {"no-topic-counts", no_argument, NULL, OPT_NO_TOPIC_COUNTS},
        {"log-level", required_argument, NULL, OPT_LOG},
        {"budget-ms", required_argument, NULL, OPT_BUDGET},
        {"no-watch", no_argument, NULL, OPT_NO_WATCH},
        {"check", no_argument, NULL, OPT_CHECK},
        {"allow-anonymous", no_argument, NULL, OPT_ALLOW_ANON},
        {"add-user", required_argument, NULL, OPT_ADD_USER},
        {"del-user", required_argument, NULL, OPT_DEL_USER},
        {"tenant", required_argument, NULL, OPT_TENANT},
        {"list-users", no_argument, NULL, OPT_LIST_USERS},
        {"version", no_argument, NULL, OPT_VERSION},
        {"help", no_argument, NULL, OPT_HELP},
        {NULL, 0, NULL, 0},
    };
    mqr_engine_options_t o;
    mqr_engine_options_init(&o);
    o.handle_signals = 1;
    o.watch_script = 1;
    cli_listen_t listens[32];
    cli_limit_t limits[64];
    int nlimits = 0;
    int nlisten = 0;
    const char *cert = NULL, *key = NULL, *cafile = NULL;
    int require_cert = 0, no_listen = 0;
    int check = 0, c;
    int allow_anon = -1, list_users = 0;
    const char *add_user = NULL, *del_user = NULL, *tenant = NULL;
    char admin_host[256] = "127.0.0.1";
    int admin_port = -1;
    const char *admin_tokens = NULL;
    const char *admin_hosts[16], *admin_origins[16];
    size_t admin_nhosts = 0, admin_norigins = 0;
    int admin_require_token = 0;
    while ((c = getopt_long(argc, argv, "hV", longopts, NULL)) != -1) {
        switch (c) {
        case OPT_LISTEN:
        case OPT_LISTEN_TLS:
        case OPT_LISTEN_WS:
        case OPT_LISTEN_WSS: {
            static const char *const names[] = {"--listen", "--listen-tls", "--listen-ws",
                                                "--listen-wss"};
            int type = c == OPT_LISTEN       ? MQR_LISTEN_TCP
                       : c == OPT_LISTEN_TLS ? MQR_LISTEN_TLS
                       : c == OPT_LISTEN_WS  ? MQR_LISTEN_WS
                                             : MQR_LISTEN_WSS;
            if (nlisten == (int)(sizeof listens / sizeof listens[0])) {
                fprintf(stderr, "mqrouter: too many listeners\n");
                return 2;
            }
            cli_listen_t *li = &listens[nlisten];
            if (parse_listen(optarg, &li->host, &li->port) < 0) {
                fprintf(stderr, "mqrouter: %s wants HOST:PORT, got '%s'\n", names[type], optarg);
                return 2;
            }
            li->type = type;
            nlisten++;
            break;
        }
        case OPT_CERT:
            cert = optarg;
            break;
        case OPT_KEY:
            key = optarg;
            break;
        case OPT_CAFILE:
            cafile = optarg;
            break;
        case OPT_REQUIRE_CERT:
            require_cert = 1;
            break;
        case OPT_LIMIT:
            if (nlimits == (int)(sizeof limits / sizeof limits[0]) ||
                parse_limit(optarg, &limits[nlimits]) < 0) {
                fprintf(stderr, "mqrouter: --limit wants KEY=NUMBER with a known key, got '%s'\n",
                        optarg);
                return 2;
            }
            nlimits++;
            break;
        case OPT_NO_LISTEN:
            no_listen = 1;
            break;
        case OPT_ADMIN: {
            char *end, *h = NULL;
            long p = strtol(optarg, &end, 10);
            if (!*end && end != optarg && p >= 0 && p <= 65535) { /* PORT alone */
                snprintf(admin_host, sizeof admin_host, "127.0.0.1");
                admin_port = (int)p;
            } else if (parse_listen(optarg, &h, &admin_port) == 0 &&
                       strlen(h) < sizeof admin_host) {
                snprintf(admin_host, sizeof admin_host, "%s", h);
                free(h);
            } else {
                free(h);
                fprintf(stderr, "mqrouter: --admin wants HOST:PORT, got '%s'\n", optarg);
                return 2;
            }
            break;
        }
        case OPT_ADMIN_TOKENS:
            admin_tokens = optarg;
            break;
        case OPT_ADMIN_HOST:
        case OPT_ADMIN_ORIGIN: {
            bool is_host = c == OPT_ADMIN_HOST;
            size_t *n = is_host ? &admin_nhosts : &admin_norigins;
            if (*n == sizeof admin_hosts / sizeof admin_hosts[0]) {
                fprintf(stderr, "mqrouter: at most %zu --admin-%s\n",
                        sizeof admin_hosts / sizeof admin_hosts[0], is_host ? "host" : "origin");
                return 2;
            }
            (is_host ? admin_hosts : admin_origins)[(*n)++] = optarg;
            break;
        }
        case OPT_ADMIN_REQUIRE_TOKEN:
            admin_require_token = 1;
            break;
        case OPT_DATA:
            o.data_dir = optarg;
            break;
        case OPT_UPSTREAM_TRANSPORT:
            o.upstream_transport = optarg;
            break;
        case OPT_NO_TOPIC_COUNTS:
            o.no_topic_counts = 1;
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
        case OPT_ALLOW_ANON:
            allow_anon = 1;
            break;
        case OPT_ADD_USER:
            add_user = optarg;
            break;
        case OPT_DEL_USER:
            del_user = optarg;
            break;
        case OPT_TENANT:
            tenant = optarg;
            break;
        case OPT_LIST_USERS:
            list_users = 1;
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
    if (tenant && !add_user) {
        fprintf(stderr, "mqrouter: --tenant goes with --add-user\n");
        free_listens(listens, nlisten);
        return 2;
    }
    if (add_user || del_user || list_users) {
        free_listens(listens, nlisten);
        if (optind != argc) {
            usage(stderr);
            return 2;
        }
        return users_main(&o, add_user, tenant, del_user, list_users);
    }
    if (optind != argc - 1) {
        usage(stderr);
        return 2;
    }
    const char *script = argv[optind];
    for (int i = 0; i < nlisten; i++) {
        if ((listens[i].type == MQR_LISTEN_TLS || listens[i].type == MQR_LISTEN_WSS) &&
            (!cert || !key)) {
            fprintf(stderr, "mqrouter: --listen-tls and --listen-wss need --cert and --key\n");
            return 2;
        }
    }
    if (require_cert && !cafile) {
        fprintf(stderr, "mqrouter: --require-cert needs --cafile\n");
        return 2;
    }
    /* the engine's own listener only when no --listen* says otherwise */
    if (no_listen || nlisten > 0 || check) o.listen_port = -1;

    if (check) {
        /* a scratch engine: no listener, in-memory store, nothing persists */
        o.listen_port = -1;
        o.data_dir = "";
        o.check_only = 1; /* mq.listen validates, binds nothing */
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
        free_listens(listens, nlisten);
        return 1;
    }
    for (int i = 0; i < nlisten && !check; i++) {
        mqr_listen_options_t lo;
        mqr_listen_options_init(&lo);
        lo.type = listens[i].type;
        lo.host = listens[i].host;
        lo.port = listens[i].port;
        for (int k = 0; k < nlimits; k++)
            apply_limit(&lo, &limits[k]);
        if (lo.type == MQR_LISTEN_TLS || lo.type == MQR_LISTEN_WSS) {
            lo.cert_file = cert;
            lo.key_file = key;
            lo.ca_file = cafile;
            lo.require_client_cert = require_cert;
        }
        mqr_listener_t *l;
        rc = mqr_engine_listen(e, &lo, &l, &err);
        if (rc < 0) {
            fprintf(stderr, "mqrouter: %s\n", err ? err : mqr_strerror(rc));
            free(err);
            mqr_engine_free(e);
            free_listens(listens, nlisten);
            return 1;
        }
    }
    if (allow_anon >= 0 && !check) mqr_listener_allow_anonymous(e, allow_anon);
    if ((admin_tokens || admin_nhosts || admin_norigins || admin_require_token) && admin_port < 0) {
        fprintf(stderr, "mqrouter: --admin-tokens, --admin-host, --admin-origin and "
                        "--admin-require-token need --admin\n");
        rc = -1;
    } else if (admin_port >= 0) { /* with --check: validated, not bound */
        char **tokens = NULL;
        size_t ntokens = 0;
        rc = admin_tokens ? mqr_admin_tokens_read(admin_tokens, &tokens, &ntokens, &err) : 0;
        mqr_admin_options_t ao;
        mqr_admin_options_init(&ao);
        ao.host = admin_host;
        ao.port = admin_port;
        ao.tokens = (const char *const *)tokens;
        ao.ntokens = ntokens;
        ao.require_token = admin_require_token;
        ao.hosts = admin_hosts;
        ao.nhosts = admin_nhosts;
        ao.origins = admin_origins;
        ao.norigins = admin_norigins;
        if (rc == 0) rc = mqr_engine_admin_start(e, &ao, &err);
        mqr_admin_tokens_free(tokens, ntokens);
        if (rc < 0) {
            fprintf(stderr, "mqrouter: %s\n", err ? err : mqr_strerror(rc));
            free(err);
        }
    }
    if (rc < 0) {
        mqr_engine_free(e);
        free_listens(listens, nlisten);
        return 1;
    }
    rc = mqr_engine_load_file(e, script, &err);
    if (rc < 0) {
        fprintf(stderr, "mqrouter: %s: %s\n", mqr_err_name(rc), err ? err : mqr_strerror(rc));
        free(err);
        mqr_engine_free(e);
        free_listens(listens, nlisten);
        return 1;
    }
    if (check) {
        printf("%s: OK\n", script);
        mqr_engine_free(e);
        free_listens(listens, nlisten);
        return 0;
    }
    rc = mqr_engine_run(e);
    mqr_engine_free(e);
    free_listens(listens, nlisten);
    return rc == 0 ? 0 : 1;
}
