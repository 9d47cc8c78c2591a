-- otlp_json_spans: the fast path for OTLP JSON-lines span files (the Collector's file exporter: one
-- {"resourceSpans": [...]} export request per line), read by DuckDB's JSON reader on every core instead of by
-- Python (analyzer/load/_otlp_json_duckdb.py runs it; analyzer/load/_otlp_json.py is the rule it must equal).
--
-- It gives exactly the rows the Python reader gives, or nothing: whatever it cannot be sure of ends the statement
-- with error() (rolled back), and the Python reader loads the file instead and reports its bad records as always.
-- Hence the checks below: a JSON leaf is read as JSON text so that its JSON type is known (a number is no string
-- id, "true" no bool), containers are typed (read_json fails on an object where a list is due, and on duplicate
-- keys), and anything the Python reader reads in a way not repeated here (base64 ids of another length, short hex
-- ids, kvlistValue, bytesValue, arrays of doubles or nested, 64-bit values past BIGINT, ints spelled "007" or
-- "1e3", doubles spelled as strings, the old instrumentationLibrary* names, resourceLogs) is an error.
--
-- The module feeds `insert` the file's lines through a pipe ($lines), each non-blank line N wrapped as
-- {"l": N, "r": <the line>}: the line number, Python's `path:N`, without WITH ORDINALITY (which would read on one
-- thread). Sections, run in order: `macros` (TEMP macros, on the module's own cursor), `check` (the lines, raw:
-- what the typed reader cannot see), `events_links` or `no_events_links` (more macros), `insert`. {key_values} is
-- the `key_values` section; {kind} and {status_code} are CASE expressions the module writes from the Python
-- reader's own tables (_otlp_json._KINDS, _STATUS), so that the enum rule lives in one place.

-- @section macros
-- Whatever is not read exactly ends the statement here (the module rolls it back; Python reads the file).
-- error(NULL) does not fail: the message must never be NULL.
CREATE OR REPLACE TEMP MACRO jitrace_otlp_fail(what) AS error(coalesce('otlp fast path: ' || what, 'otlp fast path'));
-- A JSON leaf -> its text if it is a JSON string, else NULL.
CREATE OR REPLACE TEMP MACRO jitrace_otlp_text(t) AS
    CASE WHEN starts_with(t, '"') THEN
        CASE WHEN contains(t, '\') THEN json_extract_string(t, '$') ELSE t[2:-2] END
    END;
-- A JSON integer leaf, a number or a decimal string (the 64-bit JSON mapping) -> BIGINT; NULL stays NULL. Only the
-- canonical spelling within BIGINT: Python's int() also takes " 7", "+7", "1_0", 2**63 (wrapped): left to it.
CREATE OR REPLACE TEMP MACRO jitrace_otlp_int(t) AS
    CASE
        WHEN t IS NULL THEN NULL
        WHEN regexp_full_match(t, '"(?:-?[1-9][0-9]{0,18}|0)"|-?[1-9][0-9]{0,18}|0')
            THEN coalesce(TRY_CAST(trim(t, '"') AS BIGINT), jitrace_otlp_fail('an integer past 64 bits'))
        ELSE jitrace_otlp_fail('an integer spelled ' || t)
    END;
-- An id leaf -> lower-case hex of `n` bytes, from hex of exactly 2n digits (any case) or padded base64 of n bytes;
-- NULL stays NULL (the caller decides what absent and all-zero ids mean).
CREATE OR REPLACE TEMP MACRO jitrace_otlp_id(t, n) AS
    CASE
        WHEN t IS NULL THEN NULL
        WHEN regexp_full_match(t, '"[0-9A-Fa-f]{' || (2 * n) || '}"') THEN lower(t[2:-2])
        WHEN regexp_full_match(t, CASE n WHEN 16 THEN '"[A-Za-z0-9+/]{22}=="' ELSE '"[A-Za-z0-9+/]{11}="' END)
            THEN lower(hex(from_base64(t[2:-2])))
        ELSE jitrace_otlp_fail('an id spelled ' || t)
    END;
-- An arrayValue leaf (JSON text, as yyjson writes it: compact, keys in order) -> the array's JSON text. Arrays
-- of strings, of integers or of booleans, as instrumentations write them (OTLP arrays hold one type); any other
-- (doubles, empty or nested values, several fields in a value) fails. The text is checked whole first, so the
-- literal replacements below meet only the structure: a `{"` never occurs inside a JSON string.
CREATE OR REPLACE TEMP MACRO jitrace_otlp_array(t) AS
    CASE
        WHEN t IS NULL THEN NULL
        WHEN t = '{}' OR t = '{"values":[]}' THEN '[]'
        WHEN regexp_full_match(t, '\{"values":\[\{"stringValue":"(?:[^"\\]|\\.)*"\}'
                                  || '(?:,\{"stringValue":"(?:[^"\\]|\\.)*"\})*\]\}')
            THEN '[' || replace(t[27:-4], '},{"stringValue":', ',') || ']'
        WHEN regexp_full_match(t, '\{"values":\[\{"intValue":(?:"(?:-?[1-9][0-9]{0,17}|0)"|-?[1-9][0-9]{0,17}|0)\}'
                                  || '(?:,\{"intValue":(?:"(?:-?[1-9][0-9]{0,17}|0)"|-?[1-9][0-9]{0,17}|0)\})*\]\}')
            THEN '[' || regexp_replace(t[12:-3], '\{"intValue":"?(-?[0-9]+)"?\}', '\1', 'g') || ']'
        WHEN regexp_full_match(t, '\{"values":\[\{"boolValue":(?:true|false)\}(?:,\{"boolValue":(?:true|false)\})*\]\}')
            THEN '[' || replace(replace(t[12:-3], '{"boolValue":true}', 'true'), '{"boolValue":false}', 'false') || ']'
        ELSE jitrace_otlp_fail('an arrayValue ' || t[:200])
    END;
-- An AnyValue -> its JSON text: the first field present, in _otlp_json.any_value's order (COALESCE is lazy: a
-- later field is not looked at), 'null' for none. A double's text is DuckDB's DOUBLE -> VARCHAR: the shortest
-- repr with a fraction or exponent, as Python's repr.
CREATE OR REPLACE TEMP MACRO jitrace_otlp_any(v) AS
    coalesce(
        CASE WHEN starts_with(v.stringValue, '"') THEN v.stringValue::VARCHAR
            WHEN v.stringValue IS NOT NULL THEN jitrace_otlp_fail('stringValue ' || v.stringValue) END,
        jitrace_otlp_int(v.intValue)::VARCHAR,
        -- a JSON number (a cast would also take "1.5" or true, which Python does not: a string or a bad record)
        CASE WHEN regexp_matches(v.doubleValue, '^-?[0-9]') AND isfinite(TRY_CAST(v.doubleValue AS DOUBLE))
                THEN TRY_CAST(v.doubleValue AS DOUBLE)::VARCHAR
            WHEN v.doubleValue IS NOT NULL THEN jitrace_otlp_fail('doubleValue ' || v.doubleValue) END,
        CASE WHEN v.boolValue IN ('true', 'false') THEN v.boolValue::VARCHAR
            WHEN v.boolValue IS NOT NULL THEN jitrace_otlp_fail('boolValue ' || v.boolValue) END,
        jitrace_otlp_array(v.arrayValue),
        CASE WHEN v.kvlistValue IS NOT NULL OR v.bytesValue IS NOT NULL THEN jitrace_otlp_fail('kvlist or bytes') END,
        'null'
    );
-- A KeyValue list -> its JSON object. Keys must be distinct: the Python reader makes a dict (a repeated key keeps
-- its place, the last value wins), while DuckDB's from_json would read the first of two equal keys.
CREATE OR REPLACE TEMP MACRO jitrace_otlp_object(kvs) AS
    CASE
        WHEN kvs IS NULL OR len(kvs) = 0 THEN '{}'
        WHEN len(list_distinct(list_transform(kvs, lambda a: hash(a.key)))) < len(kvs)
            THEN jitrace_otlp_fail('a repeated attribute key')
        ELSE '{' || array_to_string(list_transform(kvs, lambda a:
            CASE WHEN starts_with(a.key, '"') THEN a.key::VARCHAR ELSE jitrace_otlp_fail('a key ' || a.key) END
            || ':' || jitrace_otlp_any(a.value)), ',') || '}'
    END;

-- @section events_links
-- Span events and links -> their JSON arrays. Binding these (an object inside a lambda) costs more than reading a
-- small file, so a file without any uses `no_events_links` instead.
CREATE OR REPLACE TEMP MACRO jitrace_otlp_events(events) AS
    CASE WHEN events IS NULL OR len(events) = 0 THEN '[]' ELSE '[' || array_to_string(list_transform(events,
        lambda e: '{"name":' || CASE WHEN e.name IS NULL THEN '""' WHEN starts_with(e.name, '"') THEN e.name::VARCHAR
                                   ELSE jitrace_otlp_fail('event name ' || e.name) END
            || ',"time_ns":' || coalesce(jitrace_otlp_int(e.timeUnixNano), 0)
            || ',"attributes":' || jitrace_otlp_object(e.attributes) || '}'), ',') || ']' END;
CREATE OR REPLACE TEMP MACRO jitrace_otlp_links(links) AS
    CASE WHEN links IS NULL OR len(links) = 0 THEN '[]' ELSE '[' || array_to_string(list_transform(links,
        lambda k: '{"trace_id":"'
            || CASE WHEN nullif(jitrace_otlp_id(k.traceId, 16), '00000000000000000000000000000000') IS NULL
                THEN jitrace_otlp_fail('link traceId') ELSE jitrace_otlp_id(k.traceId, 16) END
            || '","span_id":"'
            || CASE WHEN nullif(jitrace_otlp_id(k.spanId, 8), '0000000000000000') IS NULL
                THEN jitrace_otlp_fail('link spanId') ELSE jitrace_otlp_id(k.spanId, 8) END
            || '","attributes":' || jitrace_otlp_object(k.attributes) || '}'), ',') || ']' END;

-- @section no_events_links
-- The check found no line naming a non-empty events or links list: then any is an error (never a wrong row).
CREATE OR REPLACE TEMP MACRO jitrace_otlp_events(events) AS
    CASE WHEN events IS NULL OR len(events) = 0 THEN '[]' ELSE jitrace_otlp_fail('events') END;
CREATE OR REPLACE TEMP MACRO jitrace_otlp_links(links) AS
    CASE WHEN links IS NULL OR len(links) = 0 THEN '[]' ELSE jitrace_otlp_fail('links') END;

-- @section key_values
-- The type read_json gives a KeyValue list ({key_values} in `insert`): every leaf JSON text, so its JSON type shows.
STRUCT(key JSON, value STRUCT(stringValue JSON, intValue JSON, doubleValue JSON, boolValue JSON, arrayValue JSON,
                              kvlistValue JSON, bytesValue JSON))[]

-- @section check
-- The lines the insert reads ($lines, as they are): one record each (the module compares the count), which is also
-- what makes the insert's {"l": N, "r": <line>} sound (a line `{...}, "x": 1` is no record here, while wrapped it
-- would parse). And what read_json cannot tell: a line that is no object, and what DuckDB's parser accepts but
-- Python's json does not or reads otherwise: trailing commas, nan/inf literals, and null, which read_json cannot
-- tell from a missing field while the Python reader can ({"stringValue": null} is a bad record, {} a null value).
-- Each pattern starts with one literal character, which RE2 finds fast. A match inside a string only sends the
-- file to the Python reader. And whether any line may hold span events or links (see `events_links`).
SELECT
    count(*) AS records,
    count(*) FILTER (WHERE NOT starts_with(json, '{')
    OR regexp_matches(json, ',\s*(?:[\]}]|(?:null|-?(?i:nan|inf|infinity))\s*[,\]}])')
    OR regexp_matches(json, ':\s*(?:null|-?(?i:nan|inf|infinity))\s*[,\]}]')
    OR regexp_matches(json, '\[\s*(?:null|-?(?i:nan|inf|infinity))\s*[,\]}]')) AS suspicious,
    count(*) FILTER (WHERE regexp_matches(json, '"(?:events|links)"\s*:\s*\[\s*[^\]\s]')) AS events_or_links
FROM read_json_objects($lines, format = 'newline_delimited', maximum_object_size = $max_line);

-- @section insert
INSERT INTO {table}
WITH lines AS (
    SELECT
        l AS line,
        CASE WHEN r.resourceSpans IS NOT NULL AND r.resourceLogs IS NULL THEN r.resourceSpans
            ELSE jitrace_otlp_fail('line ' || l || ' holds no resourceSpans, or resourceLogs') END AS rss
    FROM read_json($lines, format = 'newline_delimited', records = true, maximum_object_size = $max_line,
                   auto_detect = false, columns = {
        l: 'BIGINT',
        r: 'STRUCT(resourceSpans STRUCT(
            resource STRUCT(attributes {key_values}),
            scopeSpans STRUCT(
                scope STRUCT(name JSON),
                instrumentationLibrary JSON,
                spans STRUCT(
                    traceId JSON, spanId JSON, parentSpanId JSON, name JSON, kind JSON,
                    startTimeUnixNano JSON, endTimeUnixNano JSON,
                    status STRUCT(code JSON, message JSON),
                    attributes {key_values},
                    events STRUCT(name JSON, timeUnixNano JSON, attributes {key_values})[],
                    links STRUCT(traceId JSON, spanId JSON, attributes {key_values})[]
                )[]
            )[],
            instrumentationLibrarySpans JSON
        )[], resourceLogs JSON)'
    })
), resources AS (
    SELECT line, unnest(rss) AS rs FROM lines
), resource_rows AS (
    -- resource checks happen here, before the scopes are unnested: a resource without spans is still read in Python
    SELECT
        line,
        CASE WHEN rs.instrumentationLibrarySpans IS NULL THEN jitrace_otlp_object(rs.resource.attributes)
            ELSE jitrace_otlp_fail('instrumentationLibrarySpans') END AS resource,
        -- service.name, when a string (keys are distinct: one at most)
        jitrace_otlp_text(list_filter(rs.resource.attributes,
                                      lambda a: a.key = '"service.name"')[1].value.stringValue) AS service,
        rs.scopeSpans AS scopes
    FROM resources
), scopes AS (
    SELECT line, resource, service, unnest(scopes) AS ss FROM resource_rows
), spans AS (
    SELECT
        line, resource, service,
        CASE WHEN ss.instrumentationLibrary IS NULL THEN jitrace_otlp_text(ss.scope.name)
            ELSE jitrace_otlp_fail('instrumentationLibrary') END AS scope,
        unnest(ss.spans) AS s
    FROM scopes
), ids AS (
    SELECT
        *,
        jitrace_otlp_id(s.traceId, 16) AS trace_id,
        jitrace_otlp_id(s.spanId, 8) AS span_id,
        CASE WHEN s.parentSpanId <> '""' THEN jitrace_otlp_id(s.parentSpanId, 8) END AS parent_span_id
    FROM spans
)
SELECT
    CASE WHEN trace_id IS NULL OR trace_id = '00000000000000000000000000000000'
        THEN jitrace_otlp_fail('traceId missing or zero') ELSE trace_id END,
    CASE WHEN span_id IS NULL OR span_id = '0000000000000000'
        THEN jitrace_otlp_fail('spanId missing or zero') ELSE span_id END,
    nullif(parent_span_id, '0000000000000000'),
    CASE WHEN s.name IS NULL THEN '' ELSE coalesce(jitrace_otlp_text(s.name), jitrace_otlp_fail('name ' || s.name)) END,
    coalesce({kind}, jitrace_otlp_fail('kind ' || s.kind)),
    coalesce(jitrace_otlp_int(s.startTimeUnixNano), 0),
    coalesce(jitrace_otlp_int(s.endTimeUnixNano), 0),
    coalesce({status_code}, jitrace_otlp_fail('status code ' || s.status.code)),
    CASE WHEN s.status.message <> '""' THEN jitrace_otlp_text(s.status.message) END,
    service,
    resource,
    jitrace_otlp_object(s.attributes),
    jitrace_otlp_events(s.events),
    jitrace_otlp_links(s.links),
    scope,
    $path || ':' || line
FROM ids;
