/*
 * amqtt_plugin.h: the C ABI of amqtt-rs `.so` plugins, version 1.
 *
 * This is the same contract as `amqtt_plugin_api::abi` in Rust (plugin-api/src/abi.rs); a test
 * of that crate (tests/header.rs) compiles this header and compares every size, offset and
 * constant with the Rust definitions, so the two cannot drift apart.
 *
 * A plugin is a shared library that defines one function, amqtt_plugin_entry(), returning a
 * pointer to a static amqtt_plugin_descriptor. At start-up the broker loads every `*.so` in its
 * plugins folder (`plugins-dir` in the YAML, default `./plugins` next to the config file),
 * calls amqtt_plugin_entry(), reads `abi_version` first and skips the library, with a warning,
 * when it is not AMQTT_PLUGIN_ABI_VERSION. The YAML then enables the plugin by its `name`, e.g.
 *
 *     auth:
 *       plugins: [my_auth]
 *       my-setting: 42
 *
 * Build:  cc -shared -fPIC -I path/to/plugin-api/include -o my_auth.so my_auth.c
 *
 * Rules of the boundary
 * ---------------------
 * Threads:   every function may be called from several broker threads at the same time, for
 *            the same instance. A plugin that keeps mutable state protects it itself. Calls
 *            run on threads of the broker's blocking pool, never on the threads that serve
 *            clients, so a slow call (a database, a network service) delays only the client
 *            it is about; it should still answer in reasonable time, since that client waits.
 * Strings:   an amqtt_str is a pointer and a length, NOT NUL-terminated. Its bytes belong to
 *            the caller and are valid only until the function it was passed to returns: copy
 *            what you keep. A NULL `ptr` means absent (no user name, no password...), which
 *            is not the same as an empty string (`ptr` set, `len` 0).
 * Memory:    each side frees what it allocated. The broker never frees anything the plugin
 *            returns except through the plugin's own `destroy`; the plugin never frees a
 *            string the broker passes.
 * Answers:   AMQTT_ANSWER_ALLOW, AMQTT_ANSWER_DENY or AMQTT_ANSWER_NO_OPINION. Any other
 *            value counts as a deny.
 * Lifetime:  a loaded library is never unloaded. An instance lives from `create` until the
 *            broker calls `destroy` on it (at shutdown, possibly never); `host` outlives it.
 * Crashes:   a C plugin that crashes takes the broker down with it: there is no boundary
 *            that can catch a segfault. (Rust plugins built with export_plugin! turn a panic
 *            into a deny.)
 */
#ifndef AMQTT_PLUGIN_H
#define AMQTT_PLUGIN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Version of this ABI; a library whose descriptor reports another one is not loaded. */
#define AMQTT_PLUGIN_ABI_VERSION 1u
/* Name of the function every plugin library defines. */
#define AMQTT_PLUGIN_ENTRY_SYMBOL "amqtt_plugin_entry"

/* amqtt_plugin_descriptor.kind */
#define AMQTT_KIND_AUTH 1u        /* decides who may connect; `authenticate` must be set */
#define AMQTT_KIND_TOPIC_CHECK 2u /* decides who may use which topic; `check_topic` must be set */

/* What authenticate and check_topic return. */
#define AMQTT_ANSWER_NO_OPINION 0u /* none of this plugin's business: the others decide */
#define AMQTT_ANSWER_ALLOW 1u
#define AMQTT_ANSWER_DENY 2u

/* The `action` of check_topic. */
#define AMQTT_ACTION_PUBLISH 1u   /* publish to this topic name */
#define AMQTT_ACTION_SUBSCRIBE 2u /* subscribe to this topic filter */
#define AMQTT_ACTION_RECEIVE 3u   /* receive a message published to this topic name */

/* The `what` of the report callback passed to create. */
#define AMQTT_REPORT_ERROR 1u       /* the plugin cannot be built; the message says why */
#define AMQTT_REPORT_UNKNOWN_KEY 2u /* a settings key the plugin does not know; the message is the key */

/* The `level` of amqtt_host.log. */
#define AMQTT_LOG_ERROR 1u
#define AMQTT_LOG_WARN 2u
#define AMQTT_LOG_INFO 3u
#define AMQTT_LOG_DEBUG 4u

/* A borrowed UTF-8 string or byte string: see "Strings" above. */
typedef struct amqtt_str {
    const uint8_t *ptr; /* NULL: absent */
    size_t len;
} amqtt_str;

/* The client a call is about. */
typedef struct amqtt_client {
    amqtt_str client_id;
    amqtt_str username;     /* absent when the client sent none */
    amqtt_str password;     /* authenticate only (absent when the client sent none); always absent in check_topic */
    amqtt_str peer;         /* address as text: "192.0.2.7:50112", "[2001:db8::1]:50112" */
    amqtt_str cert_subject; /* subject of the TLS client certificate; absent without one */
    uint8_t clean_session;  /* 0 or 1 */
} amqtt_client;

/* What the broker offers a plugin for the plugin's whole life (passed to create). */
typedef struct amqtt_host {
    uint32_t abi_version;
    /* Writes `message` to the broker's log at `level` (AMQTT_LOG_*), under the name `plugin`
     * (the name the plugin was given in create). Safe to call from any thread, at any time
     * after create was first called. */
    void (*log)(uint32_t level, amqtt_str plugin, amqtt_str message);
} amqtt_host;

/* Receives, during create only, an error or an unknown settings key (AMQTT_REPORT_*).
 * `context` is the `report_context` create was given. */
typedef void (*amqtt_report_fn)(void *context, uint32_t what, amqtt_str message);

/* What amqtt_plugin_entry() returns a pointer to. Static: the broker never frees it. */
typedef struct amqtt_plugin_descriptor {
    /* AMQTT_PLUGIN_ABI_VERSION. The first field in every version: the broker reads it before
     * anything else and refuses the library when it differs. */
    uint32_t abi_version;
    /* AMQTT_KIND_AUTH or AMQTT_KIND_TOPIC_CHECK. */
    uint32_t kind;
    /* The plugin's name, NUL-terminated UTF-8, not empty: what the YAML enables it by. Two
     * libraries with the same name: the broker keeps the first (in file name order). */
    const char *name;
    /* Builds an instance. `name` is the name it was enabled under; `settings_yaml` its
     * settings as YAML text (a mapping; empty when there are none): for an auth plugin the
     * whole `auth:` section, shared with the other auth plugins, for a topic-check plugin the
     * `topic-check:` section. `config_dir` is the folder of the broker's config file, against
     * which relative paths in settings are resolved (absent without a config file).
     * Report each key the plugin does not know with AMQTT_REPORT_UNKNOWN_KEY (the broker
     * decides whether that is an error: in a shared section, a key another plugin knows is
     * fine). When it cannot build, it reports at least one AMQTT_REPORT_ERROR and returns
     * NULL: the broker then refuses to start and shows the messages. Must not return NULL
     * without reporting an error; a non-NULL instance after reporting an error is destroyed
     * and counts as a failure. Must not keep `report` or `report_context`. */
    void *(*create)(const amqtt_host *host, amqtt_str name, amqtt_str settings_yaml, amqtt_str config_dir,
                    amqtt_report_fn report, void *report_context);
    /* Frees an instance made by create. Not called while another call on it is running. */
    void (*destroy)(void *instance);
    /* AMQTT_KIND_AUTH: whether `client` may connect (AMQTT_ANSWER_*). NULL for other kinds. */
    uint32_t (*authenticate)(void *instance, const amqtt_client *client);
    /* AMQTT_KIND_TOPIC_CHECK: whether `client` may do `action` (AMQTT_ACTION_*) on `topic`
     * (AMQTT_ANSWER_*). NULL for other kinds. */
    uint32_t (*check_topic)(void *instance, const amqtt_client *client, amqtt_str topic, uint32_t action);
} amqtt_plugin_descriptor;

/* The entry point every plugin library defines (exported, not static). */
const amqtt_plugin_descriptor *amqtt_plugin_entry(void);

#ifdef __cplusplus
}
#endif

#endif /* AMQTT_PLUGIN_H */
