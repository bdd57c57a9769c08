package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"regexp"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/outflow/outflow/internal/configkit"
)

// Error lists every problem found in a configuration; the caller exits with code 2.
type Error struct {
	File     string
	Problems []string
}

func (e *Error) Error() string {
	return fmt.Sprintf("config %s: %d problem(s):\n  %s", e.File, len(e.Problems), strings.Join(e.Problems, "\n  "))
}

// Load reads, expands and validates the configuration file at path. Every problem is
// reported in one *Error.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, &Error{File: path, Problems: []string{err.Error()}}
	}
	cfg, err := Parse(data)
	var ce *Error
	if errors.As(err, &ce) {
		ce.File = path
	}
	return cfg, err
}

// Parse is Load for configuration text.
func Parse(data []byte) (*Config, error) {
	var p configkit.Problems
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return nil, &Error{File: "(text)", Problems: []string{err.Error()}}
	}
	if len(root.Content) == 0 {
		return nil, &Error{File: "(text)", Problems: []string{"the configuration is empty"}}
	}
	var cfg Config
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil && !errors.Is(err, io.EOF) {
		var te *yaml.TypeError
		if !errors.As(err, &te) {
			return nil, &Error{File: "(text)", Problems: []string{err.Error()}}
		}
		paths := linePaths(&root)
		for _, msg := range te.Errors {
			addYAMLError(&p, paths, msg)
		}
	}
	expandEnv(&p, reflect.ValueOf(&cfg).Elem(), "")
	cfg.validate(&p)
	if len(p.List()) > 0 {
		return nil, &Error{File: "(text)", Problems: p.List()}
	}
	return &cfg, nil
}

var (
	yamlLine     = regexp.MustCompile(`^line (\d+)(?: column (\d+))?: (.*)$`)
	unknownField = regexp.MustCompile(`^field (\S+) not found in type \S+$`)
)

// addYAMLError records a yaml.v3 decoding error under the path of the line it names.
func addYAMLError(p *configkit.Problems, paths map[position]string, msg string) {
	m := yamlLine.FindStringSubmatch(msg)
	if m == nil {
		p.Addf("", "%s", msg)
		return
	}
	line, _ := strconv.Atoi(m[1])
	column, _ := strconv.Atoi(m[2]) // 0 when the error names only the line
	detail := m[3]
	if f := unknownField.FindStringSubmatch(detail); f != nil {
		detail = fmt.Sprintf("unknown field %q", f[1])
	}
	path, ok := paths[position{line, column}]
	if !ok {
		path = paths[position{line, 0}]
	}
	if path == "" {
		path = "line " + m[1]
	} else {
		path += " (line " + m[1] + ")"
	}
	p.Addf(path, "%s", detail)
}

// position is a place in the YAML text; column 0 stands for the whole line.
type position struct{ line, column int }

// linePaths maps the positions of keys and scalar values to the path of their field,
// named as validation names it (`integration "acme-s3": s3.bucket`). A line maps to
// its first field: several share a line in flow style ({a: 1, b: 2}).
func linePaths(root *yaml.Node) map[position]string {
	paths := map[position]string{}
	add := func(n *yaml.Node, path string) {
		paths[position{n.Line, n.Column}] = path
		if _, taken := paths[position{n.Line, 0}]; !taken {
			paths[position{n.Line, 0}] = path
		}
	}
	var walk func(n *yaml.Node, path string)
	walk = func(n *yaml.Node, path string) {
		switch n.Kind {
		case yaml.DocumentNode:
			for _, c := range n.Content {
				walk(c, path)
			}
		case yaml.MappingNode:
			for i := 0; i+1 < len(n.Content); i += 2 {
				k, v := n.Content[i], n.Content[i+1]
				child := joinPath(path, k.Value)
				if path == "" && k.Value == "integrations" && v.Kind == yaml.SequenceNode {
					add(k, child)
					for j, item := range v.Content {
						walk(item, integrationPath(j, mappingValue(item, "id"))+":")
					}
					continue
				}
				add(k, child)
				walk(v, child)
			}
		case yaml.SequenceNode:
			for i, c := range n.Content {
				walk(c, path+"["+itoa(i)+"]")
			}
		default:
			add(n, path)
		}
	}
	walk(root, "")
	return paths
}

func joinPath(path, key string) string {
	switch {
	case path == "":
		return key
	case strings.HasSuffix(path, ":"):
		return path + " " + key
	}
	return path + "." + key
}

func mappingValue(n *yaml.Node, key string) string {
	if n.Kind != yaml.MappingNode {
		return ""
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			return n.Content[i+1].Value
		}
	}
	return ""
}

var envRef = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)\}`)

// expandEnv replaces ${NAME} in every string of v from the environment; a variable
// that is not set is a problem.
func expandEnv(p *configkit.Problems, v reflect.Value, path string) {
	switch v.Kind() {
	case reflect.Pointer:
		if !v.IsNil() {
			expandEnv(p, v.Elem(), path)
		}
	case reflect.Struct:
		t := v.Type()
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			if !f.IsExported() {
				continue
			}
			name, opts, _ := strings.Cut(f.Tag.Get("yaml"), ",")
			child := path
			if opts != "inline" {
				child = joinPath(path, name)
			}
			if path == "" && name == "integrations" {
				for j := 0; j < v.Field(i).Len(); j++ {
					in := v.Field(i).Index(j)
					expandEnv(p, in, integrationPath(j, in.FieldByName("ID").String())+":")
				}
				continue
			}
			expandEnv(p, v.Field(i), child)
		}
	case reflect.Slice:
		for i := 0; i < v.Len(); i++ {
			expandEnv(p, v.Index(i), path+"["+itoa(i)+"]")
		}
	case reflect.String:
		s := v.String()
		if !strings.Contains(s, "${") {
			return
		}
		v.SetString(envRef.ReplaceAllStringFunc(s, func(ref string) string {
			name := envRef.FindStringSubmatch(ref)[1]
			val, ok := os.LookupEnv(name)
			if !ok {
				p.Addf(path, "environment variable %s is not set", name)
			}
			return val
		}))
	}
}

func itoa(i int) string { return strconv.Itoa(i) }
