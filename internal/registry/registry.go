// Package registry is a table of implementations by kind, filled by packages' init
// functions: object stores (objectio) and HTTP destinations (delivery).
package registry

import (
	"fmt"
	"slices"
	"sync"
)

// Registry maps kinds to values of T (factories, as a rule).
type Registry[T any] struct {
	what string // what a kind names, for messages: "store", "destination"
	mu   sync.RWMutex
	m    map[string]T
}

// New returns an empty registry of what.
func New[T any](what string) *Registry[T] { return &Registry[T]{what: what, m: map[string]T{}} }

// Register adds kind; a kind registered twice is a programmer error, and panics.
func (r *Registry[T]) Register(kind string, v T) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, dup := r.m[kind]; dup {
		panic(fmt.Sprintf("registry: %s kind registered twice: %s", r.what, kind))
	}
	r.m[kind] = v
}

// Kinds lists the registered kinds, sorted.
func (r *Registry[T]) Kinds() []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	ks := make([]string, 0, len(r.m))
	for k := range r.m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

// Get returns kind's value, or an error naming the known kinds.
func (r *Registry[T]) Get(kind string) (T, error) {
	r.mu.RLock()
	v, ok := r.m[kind]
	r.mu.RUnlock()
	if !ok {
		return v, fmt.Errorf("no %s of kind %q (known: %v)", r.what, kind, r.Kinds())
	}
	return v, nil
}
