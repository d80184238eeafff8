// Package upgrade decides a TokenServer's blue-green upgrade: Next(observed, now)
// returns what to write to status and what to do, and nothing here reads the
// cluster or the clock. It is pure so that every transition, a restart at every
// phase and a failure at every phase can be tested as tables, and so that a
// controller that crashes between writing the intent and acting on it resumes: the
// same facts give the same decision, and every action is safe alone.
//
// A controller drives it in each pass of a bundled TokenServer, once the active
// color's database schema is in place:
//
//  1. Observe: the spec and annotations; status.activeColor, status.failedImage and
//     status.upgrade; both StatefulSets' image and replicas; the token server pods
//     (color label, ordinal, image, Ready, the serving label); the Jobs named
//     JobName(ts, status.upgrade.id, kind) and, once the plan Job succeeded, its
//     result; the ready endpoints per color of the public Service's EndpointSlices;
//     during Promoting, the new color's summed request and 5xx counters (nil when a
//     pod cannot be scraped); the window's time zone.
//  2. Call Next with the injected clock's now.
//  3. If WriteStatus, write Status (activeColor, failedImage, upgrade) first, with
//     an optimistic lock; on a conflict, start the pass again.
//  4. Apply StatefulSets (image and replicas; the rest of the template as today),
//     create Jobs, patch pods' serving labels, record Events, set Conditions with
//     meta.SetStatusCondition, set status.currentImage from CurrentImage, and
//     requeue after RequeueAfter when it is not zero.
//  5. Hold signing-key rotation while Active says an upgrade runs.
package upgrade
